import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from segray.metrics import iou


def random_masks(rng, n=20, shape=(17, 23)):
    masks = [rng.random(shape) < rng.uniform(0.05, 0.95) for _ in range(n)]
    return masks + [np.zeros(shape, bool), np.ones(shape, bool)]


def test_iou_matches_sklearn_jaccard_on_random_masks():
    rng = np.random.default_rng(0)
    for pred in random_masks(rng):
        for truth in random_masks(rng)[:5] + [np.ones(pred.shape, bool)]:
            expected = jaccard_score(truth.ravel(), pred.ravel(), zero_division=1.0)
            assert iou(pred, truth) == pytest.approx(expected)


def test_empty_union_counts_as_one_and_disjoint_as_zero():
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0
    left, right = empty.copy(), empty.copy()
    left[:, :2], right[:, 2:] = True, True
    assert iou(left, right) == 0.0


def test_batched_torch_iou_equals_numpy_per_mask():
    rng = np.random.default_rng(1)
    preds, truths = np.stack(random_masks(rng)), np.stack(random_masks(rng))
    batched = iou(torch.from_numpy(preds), torch.from_numpy(truths)).numpy()
    assert batched == pytest.approx([iou(p, t) for p, t in zip(preds, truths)])

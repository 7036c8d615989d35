"""The per-image metrics against independent oracles: sklearn on flattened masks, and a
slow pixel-by-pixel boundary IoU written from the paper's definition."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from segray.metrics import boundary_iou, boundary_width, iou, mask_boundary, pooled_iou, score_masks
from segray.models.base import Prediction
from segray.schema import METRIC_COLUMNS


def random_masks(rng, n=12, shape=(17, 23)):
    masks = [rng.random(shape) < rng.uniform(0.05, 0.95) for _ in range(n)]
    return masks + [np.zeros(shape, bool), np.ones(shape, bool)]


def test_batched_iou_matches_sklearn_including_empty_and_full():
    rng = np.random.default_rng(0)
    for pred in random_masks(rng):
        for truth in random_masks(rng)[:4] + [np.zeros(pred.shape, bool), np.ones(pred.shape, bool)]:
            expected = jaccard_score(truth.ravel(), pred.ravel(), zero_division=1.0)
            assert iou(pred, truth) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("column", "oracle"),
    [("iou", jaccard_score), ("dice", f1_score), ("precision", precision_score), ("recall", recall_score)],
)
def test_score_masks_pixel_metrics_match_sklearn_including_empty_and_full(column, oracle):
    """score_masks computes the ratios from pixel counts: the same values as the oracles."""
    rng = np.random.default_rng(3)
    for pred in random_masks(rng):
        for truth in random_masks(rng)[:4] + [np.zeros(pred.shape, bool), np.ones(pred.shape, bool)]:
            expected = oracle(truth.ravel(), pred.ravel(), zero_division=1.0)
            assert score_masks(pred, truth)[column] == pytest.approx(expected)


def test_boundary_iou_of_small_masks_away_from_the_edge_matches_slow_reference():
    """Masks far smaller than the image: the bands are computed on their bounding box."""
    rng = np.random.default_rng(4)
    shape = (120, 150)
    for _ in range(6):
        pred, truth = np.zeros(shape, bool), np.zeros(shape, bool)
        pred[30:70, 40:80] = blob(rng, (40, 40))
        truth[35:75, 50:90] = blob(rng, (40, 40))
        assert boundary_iou(pred, truth) == pytest.approx(slow_boundary_iou(pred, truth))


def test_empty_conventions():
    empty, full = np.zeros((5, 5), bool), np.ones((5, 5), bool)
    both_empty, miss, false_alarm = (score_masks(*pair) for pair in ((empty, empty), (empty, full), (full, empty)))
    assert both_empty["dice"] == both_empty["precision"] == both_empty["recall"] == both_empty["iou"] == 1.0
    assert miss["precision"] == 1.0 and miss["recall"] == 0.0  # a miss: nothing claimed
    assert false_alarm["precision"] == 0.0 and false_alarm["recall"] == 1.0  # a false alarm
    assert boundary_iou(empty, empty) == 1.0
    assert boundary_iou(empty, full) == 0.0


def slow_boundary(mask, d):
    """Inner band of width d, pixel by pixel: a mask pixel is in the band when some pixel
    within Chebyshev distance d of it is outside the mask (pixels beyond the image count
    as outside, as in the reference implementation's zero padding)."""
    h, w = mask.shape
    band = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            survives = True
            for dy in range(-d, d + 1):
                for dx in range(-d, d + 1):
                    yy, xx = y + dy, x + dx
                    if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                        survives = False
            band[y, x] = not survives
    return band


def slow_boundary_iou(pred, truth, ratio=0.02):
    d = max(1, round(ratio * np.hypot(*pred.shape)))
    p, g = slow_boundary(pred, d), slow_boundary(truth, d)
    union = (p | g).sum()
    return 1.0 if union == 0 else (p & g).sum() / union


def blob(rng, shape):
    """A random filled ellipse, sometimes cut by the image edge, sometimes with holes."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
    ry, rx = rng.uniform(3, shape[0] / 1.5), rng.uniform(3, shape[1] / 1.5)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if rng.random() < 0.3:
        mask &= rng.random(shape) > 0.05
    return mask


def test_boundary_iou_matches_slow_reference():
    rng = np.random.default_rng(1)
    # diagonals 36 (d=1), 81 (d=2) and 158 (d=3)
    for shape in [(20, 30), (45, 67), (100, 122)]:
        assert boundary_width(shape) == max(1, round(0.02 * np.hypot(*shape)))
        for _ in range(4):
            pred, truth = blob(rng, shape), blob(rng, shape)
            d = boundary_width(shape)
            assert np.array_equal(mask_boundary(truth), slow_boundary(truth, d))
            assert boundary_iou(pred, truth) == pytest.approx(slow_boundary_iou(pred, truth))
        full, empty = np.ones(shape, bool), np.zeros(shape, bool)
        assert boundary_iou(full, empty) == pytest.approx(slow_boundary_iou(full, empty)) == 0.0
        assert boundary_iou(full, full) == 1.0


def test_boundary_iou_sees_what_iou_hides():
    truth = np.zeros((200, 200), bool)
    truth[20:180, 20:180] = True
    shifted = np.roll(truth, 4, axis=1)
    assert iou(shifted, truth) > 0.9
    assert boundary_iou(shifted, truth) < 0.7


def test_pooled_iou_and_score_masks():
    assert pooled_iou([1, 3], [2, 4]) == pytest.approx(4 / 6)
    assert pooled_iou([], []) == 1.0
    rng = np.random.default_rng(2)
    pred, truth = rng.random((9, 11)) < 0.5, rng.random((9, 11)) < 0.5
    scores = score_masks(pred, truth)
    assert scores["iou"] == pytest.approx(scores["intersection"] / scores["union"])
    assert scores["pred_area"] == pred.sum() and scores["true_area"] == truth.sum()
    assert scores["empty"] is False and score_masks(pred, truth & False)["empty"] is True
    assert list(scores) == METRIC_COLUMNS  # the row schema's metric columns, in order


class HalfResolution:
    """A stand-in model: image a gets a half-resolution mask, b no detection, c fails."""

    variants = ["unet"]
    device = "cpu"

    def __init__(self, spec):
        pass

    def predict(self, images):
        if len(images) > 1:
            raise RuntimeError("one at a time")  # PredictStage then retries image by image
        if images[0].shape[1] == 41:
            raise RuntimeError("boom")
        if images[0].shape[1] == 39:
            return [{"unet": Prediction(mask=None, status="no_detection")}]
        pred = np.zeros((15, 20), bool)  # half resolution: resized (nearest) to the truth's
        pred[2:12, 5:15] = True
        return [{"unet": Prediction(mask=pred)}]


def test_score_batch_fills_every_metric_column(monkeypatch):
    """PredictStage -> score_batch (no Ray): ok rows get every metric, a no-detection is
    scored as an empty prediction, an error row has null metrics."""
    from segray.evaluate.stages import PredictStage, score_batch
    from segray.models.base import ModelSpec
    from segray.schema import ROW_SCHEMA

    truth = np.zeros((30, 40), np.uint8)
    truth[4:24, 10:30] = 1
    monkeypatch.setattr("segray.evaluate.stages.build_segmenter", HalfResolution)
    stage = PredictStage(0, ModelSpec("unet", version="unet@r"), ["unet"], "unet", cpus_per_actor=1, models_per_node=1)
    images = [np.zeros((30, width, 3), np.uint8) for width in (40, 39, 41)]
    batch = {
        "image_id": np.array(["a", "b", "c"]), "image_uri": np.array(["ia", "ib", "ic"]),
        "mask_uri": np.array(["ma", "mb", "mc"]), "split": np.array(["val"] * 3),
        "category": np.array(["Kata"] * 3), "image": images,
        "truth": [truth, truth[:, :39], np.zeros((30, 41), np.uint8)], "error": np.array([None] * 3),
        "image_orientation": np.array(["stored", "exif", "stored"]), "mask_note": np.array([None] * 3),
    }
    table = score_batch(stage(batch), run_id="r", models=[(0, ["unet"])])
    assert table.schema == ROW_SCHEMA
    ok, missed, failed = table.to_pylist()
    assert ok["iou"] == 1.0 and ok["boundary_iou"] == 1.0 and ok["pred_area"] == ok["true_area"] == 400
    assert ok["union"] == ok["intersection"] == 400 and ok["empty"] is False
    assert missed["iou"] == 0.0 and missed["recall"] == 0.0 and missed["precision"] == 1.0
    assert missed["pred_area"] == 0 and missed["mask_png"] is None and missed["status"] == "no_detection"
    assert all(failed[c] is None for c in METRIC_COLUMNS) and failed["error"] == "RuntimeError: boom"
    assert [ok["image_orientation"], missed["image_orientation"], failed["image_orientation"]] == ["stored", "exif", None]
    assert ok["device"] == missed["device"] and ok["device"].startswith("CPU")
    assert {row["model_version"] for row in (ok, missed, failed)} == {"unet@r"}

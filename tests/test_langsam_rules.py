"""LangSAM's selection rules and the mapping of lang_sam results: pure numpy, no model."""

from __future__ import annotations

import numpy as np
import pytest

from segray.models.langsam_rules import RULES, VARIANTS, from_lang_sam_result, keep_top_boxes, select

EXPECTED_VARIANTS = [
    "langsam/sam_score",
    "langsam/seed_both",
    "langsam/box_score",
    "langsam/product",
    "langsam/union",
]


# ------------------------------------------------------------------ rules (pure)


def candidates(mask_scores, box_scores):
    """Masks that identify their candidate: mask i has pixel (0, i) set."""
    n = len(mask_scores)
    masks = np.zeros((n, 2, n), bool)
    for i in range(n):
        masks[i, 0, i] = True
    return masks, np.array(mask_scores, np.float32), np.array(box_scores, np.float32)


def test_rules_order_and_variants():
    assert list(RULES) == ["sam_score", "seed_both", "box_score", "product", "union"]
    assert VARIANTS == EXPECTED_VARIANTS
    for rule in RULES.values():
        assert rule.__doc__ and "\n" not in rule.__doc__.strip()


def test_sam_score_picks_max_first_on_ties():
    c = candidates([0.2, 0.9, 0.5, 0.9], [0.9, 0.1, 0.1, 0.1])
    choice = RULES["sam_score"](*c)
    assert choice.index == 1
    assert choice.mask_score == pytest.approx(0.9) and choice.box_score == pytest.approx(0.1)
    assert np.array_equal(choice.mask, c[0][1])


def test_seed_both_is_order_dependent_and_differs_from_sam_score():
    # Candidate 1 has the best mask score but a lower box score than candidate 0, so the
    # the article's loop never moves to it; candidate 2 beats candidate 0 on both.
    c = candidates([0.5, 0.9, 0.7], [0.5, 0.4, 0.6])
    assert RULES["seed_both"](*c).index == 2
    assert RULES["sam_score"](*c).index == 1
    # The same candidates in the order [1, 0, 2]: now it starts at the old candidate 1
    # and nothing beats it on both scores, so the pick changes.
    order = [1, 0, 2]
    reordered = tuple(a[order] for a in c)
    picked = RULES["seed_both"](*reordered)
    assert picked.index == 0  # = old candidate 1, not old candidate 2
    assert picked.mask_score == pytest.approx(0.9)


def test_box_score_and_product():
    c = candidates([0.9, 0.6, 0.8], [0.3, 0.95, 0.7])
    assert RULES["box_score"](*c).index == 1
    # products: 0.27, 0.57, 0.56
    assert RULES["product"](*c).index == 1
    c = candidates([0.9, 0.5, 0.8], [0.3, 0.95, 0.7])
    # products: 0.27, 0.475, 0.56
    assert RULES["product"](*c).index == 2


def test_union_takes_all_masks_and_max_scores():
    c = candidates([0.2, 0.9, 0.5], [0.8, 0.1, 0.3])
    choice = RULES["union"](*c)
    assert choice.index is None
    assert np.array_equal(choice.mask, np.any(c[0], axis=0))
    assert choice.mask.sum() == 3
    assert (choice.mask_score, choice.box_score) == (pytest.approx(0.9), pytest.approx(0.8))


def test_one_candidate_every_rule_returns_it():
    c = candidates([0.4], [0.6])
    preds = select(*c)
    assert list(preds) == EXPECTED_VARIANTS
    for p in preds.values():
        assert p.status == "ok" and p.num_detections == 1
        assert np.array_equal(p.mask, c[0][0])
        assert (p.mask_score, p.box_score) == (pytest.approx(0.4), pytest.approx(0.6))


def test_select_without_candidates_is_no_detection():
    preds = select(np.zeros((0, 0, 0), bool), np.zeros(0), np.zeros(0))
    assert list(preds) == EXPECTED_VARIANTS
    for p in preds.values():
        assert (p.mask, p.status, p.num_detections) == (None, "no_detection", 0)


def test_keep_top_boxes_keeps_highest_in_original_order():
    scores = np.array([0.5, 0.9, 0.1, 0.7, 0.9])
    assert keep_top_boxes(scores, 3).tolist() == [1, 3, 4]
    assert keep_top_boxes(scores, 10).tolist() == [0, 1, 2, 3, 4]
    assert keep_top_boxes(np.array([0.5, 0.5, 0.5]), 2).tolist() == [0, 1]


# ------------------------------------------------------------------ lang_sam mapping (pure)


def test_lang_sam_result_one_box_zero_d_scores():
    mask = np.zeros((1, 4, 5), np.float32)
    mask[0, 1, 2] = 1.0
    result = {"scores": np.array(0.8), "boxes": np.zeros((1, 4)), "masks": mask, "mask_scores": np.array(0.6)}
    masks, mask_scores, box_scores = from_lang_sam_result(result)
    assert masks.shape == (1, 4, 5) and masks.dtype == bool and masks.sum() == 1
    assert mask_scores.tolist() == [pytest.approx(0.6)] and box_scores.tolist() == [pytest.approx(0.8)]
    assert select(masks, mask_scores, box_scores)["langsam/sam_score"].num_detections == 1


def test_lang_sam_result_squeezed_or_unsqueezed_masks():
    two_d = {"scores": np.array([0.8]), "masks": np.ones((4, 5), np.float32), "mask_scores": np.array(0.6)}
    assert from_lang_sam_result(two_d)[0].shape == (1, 4, 5)
    four_d = {"scores": np.array([0.8, 0.7]), "masks": np.ones((2, 1, 4, 5)), "mask_scores": np.array([0.6, 0.5])}
    assert from_lang_sam_result(four_d)[0].shape == (2, 4, 5)


def test_lang_sam_result_no_boxes():
    result = {"scores": np.zeros(0), "boxes": np.zeros((0, 4)), "masks": [], "mask_scores": []}
    masks, mask_scores, box_scores = from_lang_sam_result(result)
    assert len(masks) == len(mask_scores) == len(box_scores) == 0
    preds = select(masks, mask_scores, box_scores)
    assert all(p.status == "no_detection" for p in preds.values())

"""LangSAM's selection rules: from one image's candidates (a mask, a SAM mask score and a
GroundingDINO box score per box) to one mask per rule, so each rule is its own variant
(`langsam/<rule>`). A sweep over prompts and box thresholds names the setting too
(`langsam/<rule>[<prompt>@<threshold>]`: `segray.config.variant_name`).
Numpy only: the model itself is in segray.models.langsam.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from segray.config import DEFAULT_BOX_THRESHOLD, DEFAULT_PROMPT, Setting, normalize_prompt, variant_name
from segray.models.base import Prediction

# --------------------------------------------------------------------------- rules


class Choice(NamedTuple):
    """What a rule picked: the mask, its scores, and the candidate index (None for union)."""

    mask: np.ndarray
    mask_score: float
    box_score: float
    index: int | None


def _pick(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray, i: int) -> Choice:
    return Choice(masks[i], float(mask_scores[i]), float(box_scores[i]), i)


def rule_sam_score(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The article's rule 1: the highest SAM mask score, the first one on ties."""
    best = 0
    for i in range(len(mask_scores)):
        if mask_scores[best] < mask_scores[i]:
            best = i
    return _pick(masks, mask_scores, box_scores, best)


def rule_seed_both(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The article's rule 2, as written: move to i only if both scores beat the current pick (order-dependent)."""
    best = 0
    for i in range(len(mask_scores)):
        if mask_scores[best] < mask_scores[i] and box_scores[best] < box_scores[i]:
            best = i
    return _pick(masks, mask_scores, box_scores, best)


def rule_box_score(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The highest GroundingDINO box score, the first one on ties."""
    return _pick(masks, mask_scores, box_scores, int(np.argmax(box_scores)))


def rule_product(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The highest mask_score * box_score, the first one on ties."""
    product = np.asarray(mask_scores, dtype=np.float64) * np.asarray(box_scores, dtype=np.float64)
    return _pick(masks, mask_scores, box_scores, int(np.argmax(product)))


def rule_union(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray) -> Choice:
    """The union of all masks; its scores are the max mask score and the max box score."""
    # The two maxima may come from different candidates: they describe the set, not one box.
    return Choice(np.any(masks, axis=0), float(np.max(mask_scores)), float(np.max(box_scores)), None)


Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], Choice]

# Fixed order: it is the order of `variants` and so of the result rows.
RULES: dict[str, Rule] = {
    "sam_score": rule_sam_score,
    "seed_both": rule_seed_both,
    "box_score": rule_box_score,
    "product": rule_product,
    "union": rule_union,
}



DEFAULT_SETTING = Setting(DEFAULT_PROMPT, DEFAULT_BOX_THRESHOLD)
DEFAULT_RULE = "sam_score"


def run_setting(params: dict[str, Any]) -> Setting:
    """The setting a run's LangSAM settings (`langsam.prompt`, `langsam.box_threshold`)
    name: its default one, whatever a sweep adds."""
    return Setting(normalize_prompt(str(params.get("prompt", DEFAULT_SETTING.prompt))),
                   float(params.get("box_threshold", DEFAULT_SETTING.box_threshold)))


def variants(settings: list[Setting] | None = None, model: str = "langsam") -> list[str]:
    """Every variant name, setting by setting, in RULES order within each."""
    return [variant_name(model, rule, setting) for setting in (settings or [None]) for rule in RULES]


VARIANTS: list[str] = variants()  # one setting's


def above(box_scores: np.ndarray, threshold: float, max_boxes: int) -> np.ndarray:
    """Indices of the boxes GroundingDINO keeps at `threshold` (score > threshold, as its
    post-processing), capped to the `max_boxes` best (`keep_top_boxes`), in detector order."""
    kept = np.flatnonzero(np.asarray(box_scores) > threshold)
    return kept[keep_top_boxes(np.asarray(box_scores)[kept], max_boxes)]


def keep_top_boxes(box_scores: np.ndarray, max_boxes: int) -> np.ndarray:
    """Indices of the `max_boxes` highest scores, returned in their original order.

    The original (detector) order is kept because `seed_both` depends on it, and it is
    the order lang_sam hands the candidates to the article's `pick_best`.
    """
    scores = np.asarray(box_scores)
    if len(scores) <= max_boxes:
        return np.arange(len(scores))
    # Stable sort on -score: among equal scores the earlier candidate wins a place.
    top = np.argsort(-scores, kind="stable")[:max_boxes]
    return np.sort(top)


def no_detection(setting: Setting | None = None, model: str = "langsam") -> dict[str, Prediction]:
    """Every variant's answer for an image where the detector found no box."""
    return {variant_name(model, rule, setting): Prediction(mask=None, status="no_detection", num_detections=0)
            for rule in RULES}


def select(masks: np.ndarray, mask_scores: np.ndarray, box_scores: np.ndarray,
           setting: Setting | None = None, model: str = "langsam") -> dict[str, Prediction]:
    """Apply every rule to one image's candidates; no candidates gives `no_detection()`."""
    n = len(mask_scores)
    if n == 0:
        return no_detection(setting, model)
    out = {}
    for name, rule in RULES.items():
        choice = rule(masks, mask_scores, box_scores)
        out[variant_name(model, name, setting)] = Prediction(
            mask=np.asarray(choice.mask, dtype=bool),
            status="ok",
            box_score=choice.box_score,
            mask_score=choice.mask_score,
            num_detections=n,
        )
    return out


def from_lang_sam_result(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map one `LangSAM.predict` result dict to (masks (N,H,W) bool, mask_scores (N,), box_scores (N,)).

    lang_sam squeezes its outputs: with one box `mask_scores` (and possibly `scores`) is a
    0-d array and `masks` may lose its box axis; with no box `masks` is an empty list.
    """
    masks = result.get("masks")
    if masks is None or len(masks) == 0:
        empty = np.zeros(0, dtype=np.float32)
        return np.zeros((0, 0, 0), dtype=bool), empty, empty
    masks = np.asarray(masks)
    if masks.ndim == 2:  # one box, squeezed to (H, W)
        masks = masks[None]
    elif masks.ndim == 4:  # (N, 1, H, W) when the mask-channel axis survived
        masks = masks[:, 0]
    # SAM2's predictor returns float 0/1 masks (or logits when asked): > 0 is the mask.
    masks = masks > 0 if masks.dtype != bool else masks
    mask_scores = np.atleast_1d(np.asarray(result["mask_scores"], dtype=np.float32)).reshape(-1)
    box_scores = np.atleast_1d(np.asarray(result["scores"], dtype=np.float32)).reshape(-1)
    if not len(masks) == len(mask_scores) == len(box_scores):
        raise ValueError(
            f"lang_sam result has {len(masks)} masks, {len(mask_scores)} mask scores "
            f"and {len(box_scores)} box scores; expected equal counts"
        )
    return masks, mask_scores, box_scores

"""Per-image segmentation metrics, defined once.

Masks are boolean arrays (numpy or torch); the metric runs over the last two axes, so a
batch of masks gives one value per mask.
"""

from __future__ import annotations


def iou(pred, truth):
    """Intersection over union of two boolean masks (numpy arrays or torch tensors).

    An empty union (both masks empty) counts as 1.0: the prediction agrees perfectly
    with a ground truth that has nothing in it. (The seeds' notebook returned 0.0 there;
    MADS has a person in every image, so the choice only matters for other data.)
    """
    intersection = (pred & truth).sum(axis=(-2, -1))
    union = (pred | truth).sum(axis=(-2, -1))
    empty = union == 0
    return (intersection + empty) / (union + empty)

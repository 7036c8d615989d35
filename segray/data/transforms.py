"""The article's albumentations presets.

The article's training transform is Resize(256) -> HorizontalFlip(0.5) -> Normalize ->
ToTensorV2. We split it at the same point in the order: the resize runs once per image
when the training set is cached (`segray.data.decode.resize_pair`, equal to
albumentations' Resize), `train_augment` runs every epoch in the training worker.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import

import albumentations as A
from albumentations.pytorch import ToTensorV2


def train_augment(seed: int | None = None) -> A.Compose:
    """The per-epoch second half of the article's training transform; `seed` fixes its flips."""
    return A.Compose([A.HorizontalFlip(p=0.5), A.Normalize(), ToTensorV2()], seed=seed)


def val_augment() -> A.Compose:
    """The article's validation transform after its Resize."""
    return A.Compose([A.Normalize(), ToTensorV2()])


def inference(size: int) -> A.Compose:
    """The article's validation transform, whole: what a trained model sees at evaluation."""
    return A.Compose([A.Resize(size, size), A.Normalize(), ToTensorV2()])

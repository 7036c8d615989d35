"""The training sets: the labelled rows of a manifest, decoded and resized once, cut into
one seeded shard per training worker and cached in Ray's object store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from segray import storage
from segray.config import DEFAULT_MAX_PIXELS
from segray.data.decode import decode_pair, resize_pair
from segray.data.manifest import to_dataset

log = logging.getLogger(__name__)


def load_resized(batch: dict[str, np.ndarray], size: int, mask_person_values: Sequence[int] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """Decode (`decode_pair`, as evaluation does) and resize image/mask pairs once. Pairs
    that fail to load, are over `max_pixels`, or whose mask's size is not the image's in
    either orientation, are left out of training (evaluation reports them per image), with a warning naming them;
    a mask with a note is used, with a warning."""
    images, masks = [], []
    for image_uri, mask_uri in zip(batch["image_uri"], batch["mask_uri"]):
        try:
            pair = decode_pair(storage.read_bytes(image_uri), storage.read_bytes(mask_uri), mask_person_values,
                               max_pixels)
        except Exception as error:
            log.warning("training skips %s: %s", image_uri, error)
            continue
        if pair.mask_note:
            log.warning("training uses %s with mask %s: %s", image_uri, mask_uri, pair.mask_note)
        image, mask = resize_pair(pair.image, pair.mask.astype(np.uint8), size)
        images.append(image)
        masks.append(mask)
    return {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "mask": np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
    }


def training_rows(manifest: pd.DataFrame, seed: int = 0, fraction: float | None = None) -> dict[str, pd.DataFrame]:
    """The train and val rows (images with a mask), each in one seeded order. With a
    `fraction`, the train rows are the first round(fraction x n) of that order (at least
    one): the subsets of one seed are nested, each smaller one inside the larger ones, and
    the same on every rerun. Every fraction validates on the same val rows."""
    labelled = manifest[manifest["mask_uri"].notna()]
    shuffled = labelled.iloc[np.random.default_rng(seed).permutation(len(labelled))]
    rows = {split: shuffled[shuffled["split"] == split] for split in ("train", "val")}
    if fraction is not None and fraction < 1:
        rows["train"] = rows["train"].iloc[:max(1, round(fraction * len(rows["train"])))]
    return rows


def passes_per_epoch(fraction: float | None) -> int:
    """How many times an epoch goes over a training subset: about 1/fraction, so that a
    subset trains for as many steps, and validates as often, as the whole train split
    (a subset must not lose for having trained less, nor cost more validations)."""
    return 1 if fraction is None or fraction >= 1 else max(1, round(1 / fraction))


def training_datasets(manifest: pd.DataFrame, image_size: int, num_workers: int = 1, seed: int = 0,
                      mask_person_values: Sequence[int] | None = None, fraction: float | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """The train and val sets (`training_rows`: with a `fraction`, its subset of the train
    split, `passes_per_epoch(fraction)` times over) as one shard per training worker
    (`train_<rank>`, `val_<rank>`), decoded and resized once and cached in the object
    store; augmentation happens per epoch in the workers (`segray.train.loop.Augment`).

    The shards are cut here, by a seeded permutation, rather than by Ray Data's
    streaming_split, which gives no ordering guarantee: so the same seed gives every
    worker the same images in the same order, run after run. Each worker then shuffles
    its shard every epoch with a seeded local shuffle."""
    datasets = {}
    for split, labelled in training_rows(manifest, seed, fraction).items():
        rows = labelled[["image_uri", "mask_uri"]]
        if len(rows) < num_workers:
            raise ValueError(f"{len(rows)} {split} images with masks to train on, fewer than the {num_workers} workers")
        for rank, shard in enumerate(np.array_split(np.arange(len(rows)), num_workers)):
            dataset = to_dataset(rows.iloc[shard]).map_batches(
                load_resized, fn_kwargs={"size": image_size, "mask_person_values": mask_person_values,
                                         "max_pixels": max_pixels})
            dataset.context.execution_options.preserve_order = True  # blocks in manifest order, every run
            dataset = dataset.materialize()
            passes = passes_per_epoch(fraction) if split == "train" else 1
            # A subset's epoch is its cached blocks `passes` times over (the local shuffle mixes
            # within a pass), so one iterator per epoch: starting one per pass cost ~1 s each.
            datasets[f"{split}_{rank}"] = dataset.union(*[dataset] * (passes - 1)) if passes > 1 else dataset
    return datasets

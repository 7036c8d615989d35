"""Every dataset source becomes a manifest: one row per image, paired with its mask.

Pairing, validation and the train/val split happen here, once, so no later stage lists
folders or guesses names. Sources:

- a folder (any URI) in MADS layout: `images/` and `masks/` with matching file names,
  directly or inside the doubled folder the Kaggle zip extracts to
  (`segmentation_full_body_mads_dataset_1192_img/segmentation_full_body_mads_dataset_1192_img/`).
  Subfolders pair by their path: `images/day1/x.png` with `masks/day1/x.png`;
- `synthetic:N[:seed]`: the generated MADS-like set, written lazily into a cache folder;
- `kaggle:owner/slug`: the Kaggle download, cached and extracted safely (`segray.data.kaggle`).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from segray import storage
from segray.config import DEFAULT_CACHE_DIR
from segray.data.kaggle import download_kaggle
from segray.errors import DatasetError

# Every format OpenCV decodes here that datasets use (a test decodes each); any case.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# What operating systems leave in folders, besides names starting with "." (`.DS_Store`,
# macOS's `._x.png`, `.ipynb_checkpoints/`): ignored, not counted as pairing problems.
SYSTEM_FILES = ("thumbs.db", "desktop.ini")
MADS_FOLDER = "segmentation_full_body_mads_dataset_1192_img"
# The article's split: sklearn's train_test_split over the sorted names, 20 % validation, seed 42.
VAL_FRACTION = 0.2
SPLIT_SEED = 42
MANIFEST_COLUMNS = ["image_id", "image_uri", "mask_uri", "split", "category"]


@dataclass
class PairingProblems:
    """Files that did not pair up. Never dropped silently: the run reports them by name."""

    images_without_mask: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    listed_but_missing: list[str] = field(default_factory=list)
    # Pairing is by path without extension, so of `x.png` and `x.jpg` in one folder only
    # the first (sorted) pairs.
    same_stem_as_another: list[str] = field(default_factory=list)
    # Links that resolve outside the dataset folder: never read.
    links_outside_root: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(files) for name, files in self.__dict__.items()}

    def as_dict(self) -> dict[str, dict]:
        return {name: {"count": len(files), "files": files} for name, files in self.__dict__.items()}


@dataclass
class Manifest:
    """The table of pairs (`MANIFEST_COLUMNS`; `mask_uri` is None for an image without
    mask) plus the pairing problems and the folder it was read from."""

    table: pd.DataFrame
    problems: PairingProblems
    root: str

    @cached_property
    def fingerprint(self) -> str:
        """The dataset's one fingerprint (`manifest_fingerprint`), computed once."""
        return manifest_fingerprint(self.table)

    def description(self, uri: str) -> dict:
        """What every record of a run names its data by: the source, fingerprint and size."""
        return {"uri": uri, "fingerprint": self.fingerprint, "images": len(self.table)}


def build_manifest(source: str, cache_dir: str = DEFAULT_CACHE_DIR) -> Manifest:
    """Resolve a dataset source (see the module docstring) into a manifest; `~` in
    `cache_dir` is the user's home."""
    cache_dir = os.path.expanduser(cache_dir)
    if source.startswith("synthetic:"):
        return read_folder(_synthetic_folder(source, cache_dir))
    if source.startswith("kaggle:"):
        return read_folder(str(download_kaggle(source.removeprefix("kaggle:"), cache_dir)))
    return read_folder(source)


def _synthetic_folder(source: str, cache_dir: str) -> str:
    from segray.data.synthetic import write_synthetic

    parts = source.split(":")
    try:
        n = int(parts[1])
        seed = int(parts[2]) if len(parts) > 2 else 0
        if n < 2 or len(parts) > 3:
            raise ValueError
    except (IndexError, ValueError):
        raise DatasetError(f"{source}: expected synthetic:N or synthetic:N:SEED with N >= 2") from None
    root = Path(cache_dir) / f"synthetic-{n}-{seed}"
    return str(write_synthetic(root, n, seed))


def find_pair_root(root: str) -> str:
    """The folder holding `images/` and `masks/`: `root` itself or the Kaggle doubled folder."""
    candidates = [root, storage.join(root, MADS_FOLDER), storage.join(root, MADS_FOLDER, MADS_FOLDER)]
    try:
        for candidate in candidates:
            folders = set(storage.list_dirs(candidate))
            if {"images", "masks"} <= folders:
                return candidate
            if "images" in folders:
                raise DatasetError(f"{candidate}: has images/ but no masks/ folder: every image needs its mask")
    except OSError as error:
        raise DatasetError(f"{root}: cannot read the dataset: {storage.describe(error)}") from error
    raise DatasetError(
        f"{root}: no dataset found: expected images/ and masks/ folders in one of " + ", ".join(candidates)
    )


def read_folder(root: str) -> Manifest:
    """Pair `images/X` with `masks/X` (same path without extension) and split them."""
    pair_root = find_pair_root(root)
    image_dir, mask_dir = storage.join(pair_root, "images"), storage.join(pair_root, "masks")
    images, masks, problems = list_pairs(root, pair_root)
    problems.listed_but_missing = _listed_but_missing(root, pair_root, images, masks, problems.links_outside_root)
    if not images:
        raise DatasetError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")

    ids = sorted(images.values())
    val = set(split_validation(ids))
    rows = []
    for image_id in ids:
        key = posixpath.splitext(image_id)[0]
        rows.append(
            {
                "image_id": image_id,
                "image_uri": storage.join(image_dir, image_id),
                "mask_uri": storage.join(mask_dir, masks[key]) if key in masks else None,
                "split": "val" if image_id in val else "train",
                "category": category_of(posixpath.basename(image_id)),
            }
        )
    return Manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), problems, pair_root)


def list_pairs(root: str, pair_root: str) -> tuple[dict[str, str], dict[str, str], PairingProblems]:
    """The images and the masks under `pair_root` (one listing of each tree), each as
    {pairing key: path}, and the files that cannot pair. A path is POSIX and relative to
    `images/` or `masks/` (`day1/x.png`: an image's id); its key is the path without
    extension. Links must stay inside the dataset folder `root`."""
    problems = PairingProblems()
    images, masks = {}, {}
    for folder, found in ((storage.join(pair_root, "images"), images), (storage.join(pair_root, "masks"), masks)):
        for path in storage.list_files(folder, recursive=True):
            if _left_by_the_system(path):
                continue
            key, ext = posixpath.splitext(path)
            uri = storage.join(folder, path)
            if _outside(root, uri):
                problems.links_outside_root.append(uri)
            elif ext.lower() not in IMAGE_EXTENSIONS:
                problems.non_image_files.append(uri)
            elif key in found:
                problems.same_stem_as_another.append(uri)
            else:
                found[key] = path
    problems.images_without_mask = sorted(images[k] for k in images.keys() - masks.keys())
    problems.masks_without_image = sorted(masks[k] for k in masks.keys() - images.keys())
    return images, masks, problems


def _left_by_the_system(path: str) -> bool:
    """A hidden file or folder (any part of the path starts with "."), or one of `SYSTEM_FILES`."""
    parts = path.split("/")
    return any(part.startswith(".") for part in parts) or parts[-1].lower() in SYSTEM_FILES


def _outside(root: str, uri: str) -> bool:
    """True for a local file that resolves, links followed, outside the folder `root`
    (object stores have no links)."""
    if not storage.is_local(root):
        return False
    real_root = os.path.realpath(storage.resolve(root)[1])
    return os.path.commonpath([real_root, os.path.realpath(storage.resolve(uri)[1])]) != real_root


def split_validation(names: list[str]) -> list[str]:
    """The validation image ids: the article's `train_test_split(sorted ids, test_size=0.2, random_state=42)`."""
    from sklearn.model_selection import train_test_split  # imported here: 5 s, driver only

    if len(names) < 2:
        raise DatasetError(f"need at least 2 images to split into train and validation, found {len(names)}")
    _, val = train_test_split(sorted(names), test_size=VAL_FRACTION, random_state=SPLIT_SEED)
    return val


def category_of(name: str) -> str:
    """MADS file names start with their category: `HipHop_HipHop1_C0_00180.png` -> `HipHop`
    (`name` is a base name: callers drop the subfolders)."""
    head, sep, _ = name.partition("_")
    return head if sep else "unknown"


def _listed_but_missing(root: str, pair_root: str, images: dict, masks: dict, outside: list[str]) -> list[str]:
    """Entries of the Kaggle `df.csv` (if present) whose image or mask file is not there.
    Entries are compared by the stem of their base name and never opened; a `df.csv` that
    is a link out of the dataset folder is not read, but added to `outside`."""
    for folder in dict.fromkeys([pair_root, storage.join(root, MADS_FOLDER), root]):
        uri = storage.join(folder, "df.csv")
        if storage.exists(uri) and _outside(root, uri):
            outside.append(uri)
        elif storage.exists(uri):
            listed = pd.read_csv(io.BytesIO(storage.read_bytes(uri)))
            break
    else:
        return []
    missing = []
    for column, found in (("images", images), ("masks", masks)):
        stems = {posixpath.basename(key) for key in found}
        for entry in listed.get(column, pd.Series(dtype=str)).dropna():
            if posixpath.splitext(posixpath.basename(entry))[0] not in stems:
                missing.append(entry)
    return sorted(missing)


def manifest_fingerprint(table: pd.DataFrame) -> str:
    """sha256 over the sorted (image_id, image size, mask size or "-" without mask) of a
    manifest: it changes when a pair is added or removed, a mask appears or goes, or a
    file is rewritten with another size. Sizes come from one listing per folder (each
    subfolder of a nested set is one folder)."""
    folders = {posixpath.dirname(uri) for uri in table["image_uri"]}
    folders |= {posixpath.dirname(uri) for uri in table["mask_uri"].dropna()}
    sizes = {}
    for folder in folders:
        sizes.update({storage.join(folder, name): size for name, size in storage.file_sizes(folder).items()})
    lines = sorted(
        f"{image_id}\t{sizes.get(image_uri)}\t{sizes.get(mask_uri, '-') if isinstance(mask_uri, str) else '-'}"
        for image_id, image_uri, mask_uri in zip(table["image_id"], table["image_uri"], table["mask_uri"])
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def to_dataset(table: pd.DataFrame, rows_per_block: int = 16):
    """A Ray Dataset of manifest rows, split into blocks so later stages run in parallel."""
    import ray.data

    records = table.astype(object).where(table.notna(), None).to_dict("records")
    return ray.data.from_items(records, override_num_blocks=max(1, -(-len(records) // rows_per_block)))

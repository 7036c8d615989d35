import os
import shutil

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from segray.data.manifest import MADS_FOLDER, build_manifest, category_of
from segray.errors import DatasetError
from tests.conftest import DATA

REAL = pd.read_csv(DATA / "mads_df.csv")  # the real Kaggle file list (1192 rows)


@pytest.fixture
def kaggle_layout(tmp_path):
    """The folder the Kaggle zip extracts to, with the real names (empty files) and df.csv."""
    inner = tmp_path / MADS_FOLDER / MADS_FOLDER
    for column in ("images", "masks", "collages"):
        (inner / column).mkdir(parents=True)
        for entry in REAL[column]:
            (inner / entry).touch()
    shutil.copy(DATA / "mads_df.csv", tmp_path / MADS_FOLDER / "df.csv")
    return tmp_path


def test_kaggle_layout_with_real_names_gives_the_seeds_split(kaggle_layout):
    manifest = build_manifest(str(kaggle_layout))
    table = manifest.table
    assert len(table) == 1192
    assert manifest.root.endswith(f"{MADS_FOLDER}/{MADS_FOLDER}")
    assert not any(manifest.problems.counts().values())

    # The seeds: sorted full paths of images and masks, split together with seed 42.
    image_dir = os.path.join(manifest.root, "images")
    mask_dir = os.path.join(manifest.root, "masks")
    image_files = sorted(os.path.join(image_dir, f) for f in os.listdir(image_dir))
    mask_files = sorted(os.path.join(mask_dir, f) for f in os.listdir(mask_dir))
    _, val_imgs, _, val_masks = train_test_split(image_files, mask_files, test_size=0.2, random_state=42)

    val = table[table["split"] == "val"]
    assert set(val["image_uri"]) == set(val_imgs)
    assert set(val["mask_uri"]) == set(val_masks)
    assert len(val) == 239 and (table["split"] == "train").sum() == 953
    assert set(table["category"]) == {"HipHop", "Jazz", "Kata", "Sports", "Taichi"}


def test_pairing_problems_are_counted_and_named(dataset_copy):
    images = sorted(os.listdir(dataset_copy / "images"))
    os.remove(dataset_copy / "masks" / images[0])
    (dataset_copy / "masks" / "Jazz_Jazz9_C0_00005.png").write_bytes(b"orphan")
    (dataset_copy / "images" / "notes.txt").write_text("not an image")

    manifest = build_manifest(str(dataset_copy))
    problems = manifest.problems
    assert problems.images_without_mask == [images[0]]
    assert problems.masks_without_image == ["Jazz_Jazz9_C0_00005.png"]
    assert problems.non_image_files == [str(dataset_copy / "images" / "notes.txt")]
    # The image without a mask stays in the manifest: evaluation gives it an error row.
    row = manifest.table.set_index("image_id").loc[images[0]]
    assert pd.isna(row["mask_uri"])
    assert len(manifest.table) == 12


def test_df_csv_entries_missing_on_disk_are_reported(kaggle_layout):
    inner = kaggle_layout / MADS_FOLDER / MADS_FOLDER
    os.remove(inner / REAL["images"][0])
    manifest = build_manifest(str(kaggle_layout))
    assert manifest.problems.listed_but_missing == [REAL["images"][0]]
    assert manifest.problems.masks_without_image == [os.path.basename(REAL["masks"][0])]


def test_category_comes_from_the_name():
    assert category_of("HipHop_HipHop1_C0_00180.png") == "HipHop"
    assert category_of("photo.png") == "unknown"


@pytest.mark.parametrize(
    "source, message",
    [
        ("kaggle:no-owner", "expected kaggle:OWNER/SLUG"),
        ("synthetic:abc", "expected synthetic:N"),
        ("synthetic:1", "expected synthetic:N"),
    ],
)
def test_bad_sources_say_why(source, message, tmp_path):
    with pytest.raises(DatasetError, match=message):
        build_manifest(source, cache_dir=str(tmp_path))


def test_a_folder_without_images_and_masks_names_where_it_looked(tmp_path):
    with pytest.raises(DatasetError, match="no dataset found") as error:
        build_manifest(str(tmp_path))
    assert MADS_FOLDER in str(error.value)

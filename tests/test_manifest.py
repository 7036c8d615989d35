import os
import shutil

import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from segray.data.manifest import MADS_FOLDER, build_manifest, category_of, list_pairs
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


def test_kaggle_layout_with_real_names_gives_the_articles_split(kaggle_layout):
    manifest = build_manifest(str(kaggle_layout))
    table = manifest.table
    assert len(table) == 1192
    assert manifest.root.endswith(f"{MADS_FOLDER}/{MADS_FOLDER}")
    assert not any(manifest.problems.counts().values())

    # The article: sorted full paths of images and masks, split together with seed 42.
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


# ---------------------------------------------------------------------------- odd data


def write(path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_files_in_subfolders_pair_by_their_relative_path(tmp_path):
    pairs = ["day1/HipHop_a.png", "day1/Jazz_b.png", "day2/HipHop_a.png", "day2/deep/Kata_c.jpg", "Sports_d.png"]
    for image_id in pairs:
        write(tmp_path / "images" / image_id)
        write(tmp_path / "masks" / (os.path.splitext(image_id)[0] + ".png"))
    write(tmp_path / "images" / "day3" / "Taichi_e.png")  # its mask is in another folder: no pair
    write(tmp_path / "masks" / "Taichi_e.png")

    manifest = build_manifest(str(tmp_path))
    table = manifest.table.set_index("image_id")
    assert sorted(table.index) == sorted([*pairs, "day3/Taichi_e.png"])
    assert table.loc["day2/deep/Kata_c.jpg", "image_uri"] == str(tmp_path / "images" / "day2" / "deep" / "Kata_c.jpg")
    assert table.loc["day2/deep/Kata_c.jpg", "mask_uri"] == str(tmp_path / "masks" / "day2" / "deep" / "Kata_c.png")
    assert table.loc["day2/HipHop_a.png", "mask_uri"] == str(tmp_path / "masks" / "day2" / "HipHop_a.png")
    assert table.loc["day2/HipHop_a.png", "category"] == "HipHop"  # from the base name
    assert manifest.problems.images_without_mask == ["day3/Taichi_e.png"]
    assert manifest.problems.masks_without_image == ["Taichi_e.png"]
    # The article's split, over the sorted ids.
    _, val = train_test_split(sorted(table.index), test_size=0.2, random_state=42)
    assert set(table.index[table["split"] == "val"]) == set(val)


def test_the_accepted_formats_are_opencvs_in_any_case(tmp_path):
    names = ["a.webp", "b.WEBP", "c.bmp", "d.tif", "e.TIFF", "f.JPG", "g.Png"]
    for name in names:
        write(tmp_path / "images" / name)
        write(tmp_path / "masks" / name)
    write(tmp_path / "images" / "h.gif")
    manifest = build_manifest(str(tmp_path))
    assert sorted(manifest.table["image_id"]) == sorted(names)
    assert manifest.problems.non_image_files == [str(tmp_path / "images" / "h.gif")]


def test_files_left_by_operating_systems_are_ignored_not_counted(tmp_path):
    for folder in ("images", "masks"):
        write(tmp_path / folder / "x.png")
        write(tmp_path / folder / "y.png")
        for junk in (".DS_Store", "Thumbs.db", "THUMBS.DB", "desktop.ini", "._x.png", ".ipynb_checkpoints/x-checkpoint.png",
                     "day1/.hidden/z.png", "day1/._y.png"):
            write(tmp_path / folder / junk)
    manifest = build_manifest(str(tmp_path))
    assert sorted(manifest.table["image_id"]) == ["x.png", "y.png"]
    assert not any(manifest.problems.counts().values())


def test_a_link_to_an_ancestor_folder_lists_each_file_once(tmp_path):
    for folder in ("images", "masks"):
        write(tmp_path / folder / "day1" / "x.png")
        write(tmp_path / folder / "y.png")
        (tmp_path / folder / "day1" / "loop").symlink_to("..")  # pyarrow alone would descend forever
        (tmp_path / folder / "again").symlink_to(".")
    manifest = build_manifest(str(tmp_path))
    assert list(manifest.table["image_id"]) == ["day1/x.png", "y.png"]
    assert not any(manifest.problems.counts().values())


def test_the_fingerprint_sees_files_in_subfolders(tmp_path):
    for image_id in ("day1/a.png", "day2/b.png"):
        write(tmp_path / "images" / image_id)
        write(tmp_path / "masks" / image_id)
    before = build_manifest(str(tmp_path)).fingerprint
    write(tmp_path / "masks" / "day2" / "b.png", b"rewritten")
    assert build_manifest(str(tmp_path)).fingerprint != before


def test_a_dataset_on_s3_pairs_its_subfolders_in_one_listing_per_tree(s3_endpoint, monkeypatch):
    import boto3
    import pyarrow.fs as pafs

    from segray import storage

    client = boto3.client("s3")
    client.create_bucket(Bucket="segray-nested")
    for key in ("images/day1/a.png", "images/day2/b.png", "images/.DS_Store", "masks/day1/a.png", "masks/day2/b.png"):
        client.put_object(Bucket="segray-nested", Key=f"set/{key}", Body=b"x")
    listings = []
    resolve = storage.resolve

    class Counting:
        """The filesystem, counting its listings."""

        def __init__(self, fs):
            self.fs = fs

        def get_file_info(self, what):
            listings.append(what)
            return self.fs.get_file_info(what)

    monkeypatch.setattr(storage, "resolve", lambda uri: (Counting(resolve(uri)[0]), resolve(uri)[1]))
    assert storage.list_files("s3://segray-nested/set/images", recursive=True) == [".DS_Store", "day1/a.png",
                                                                                   "day2/b.png"]
    assert storage.list_files("s3://segray-nested/set/images") == [".DS_Store"]
    listings.clear()
    images, masks, problems = list_pairs("s3://segray-nested/set", "s3://segray-nested/set")
    assert images == {"day1/a": "day1/a.png", "day2/b": "day2/b.png"} and masks == images
    assert not any(problems.counts().values())
    assert len([s for s in listings if isinstance(s, pafs.FileSelector)]) == 2  # one per tree

    monkeypatch.undo()
    table = build_manifest("s3://segray-nested/set").table
    assert list(table["image_uri"]) == ["s3://segray-nested/set/images/day1/a.png",
                                        "s3://segray-nested/set/images/day2/b.png"]

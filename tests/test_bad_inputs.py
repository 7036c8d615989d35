"""The bad-input corpus: every case of docs/RELIABILITY.md, generated here.

Pixel-level decode checks run on bytes in memory. The corpus then goes through
jobs/evaluate.py once, on the shared Ray, with an untrained narrow UNet: each image must
come back as exactly one row whose status, error and ground-truth area are the ones the
table promises, and any error row must make the run partial (exit status 1).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from segray.data.decode import check_same_size, decode_image, decode_mask
from segray.models.checkpoint import save_checkpoint
from segray.models.networks import build_network
from segray.train import load_resized
from tests.conftest import HDR_BOMB, job, png_bomb

REPO = Path(__file__).parents[1]
HEIGHT, WIDTH = 48, 64
BIG = 8000  # a very large image


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an array in OpenCV's channel order (gray, BGR or BGRA; 8 or 16 bits)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array))
    assert ok
    return data.tobytes()


def pil_png(image: Image.Image) -> bytes:
    """PNG bytes of the modes OpenCV cannot write: palette, 1-bit, gray + alpha."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def palette_png(indices: np.ndarray, colours: list[tuple[int, int, int]]) -> bytes:
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette([value for colour in colours for value in colour] + [0] * 3 * (256 - len(colours)))
    return pil_png(image)


def encoded(ext: str, array: np.ndarray) -> bytes:
    """`array` (OpenCV channel order) written by OpenCV in the format of `ext`."""
    ok, data = cv2.imencode(ext, np.ascontiguousarray(array))
    assert ok
    return data.tobytes()


def exif_jpeg(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `rgb` as stored, with an EXIF orientation tag (6: shown turned 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def noise(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def person(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The ground truth every mask encoding below stores: a box."""
    mask = np.zeros((height, width), bool)
    mask[height // 6 : height * 5 // 6, width // 4 : width * 3 // 4] = True
    return mask


# ---------------------------------------------------------------------------- decoding


def test_images_of_every_colour_type_decode_to_their_rgb_values():
    rgb = noise()
    bgr = rgb[..., ::-1]

    rgba = np.dstack([bgr, np.linspace(0, 255, WIDTH, dtype=np.uint8)[None].repeat(HEIGHT, 0)])
    np.testing.assert_array_equal(decode_image(png(rgba)), rgb)  # alpha dropped, colour kept

    gray = rgb[..., 0]
    np.testing.assert_array_equal(decode_image(png(gray)), np.dstack([gray] * 3))

    wide = np.random.default_rng(1).integers(0, 65536, (HEIGHT, WIDTH, 3), dtype=np.uint16)
    np.testing.assert_array_equal(decode_image(png(wide)), (wide[..., ::-1] >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decode_image(png(wide[..., 0])), np.dstack([wide[..., 0] >> 8] * 3))

    colours = [(0, 0, 0), (200, 10, 30), (5, 250, 7)]
    indices = np.random.default_rng(2).integers(0, 3, (HEIGHT, WIDTH))
    np.testing.assert_array_equal(decode_image(palette_png(indices, colours)), np.array(colours, np.uint8)[indices])

    gray_alpha = Image.fromarray(np.dstack([gray, 255 - gray]), "LA")
    np.testing.assert_array_equal(decode_image(pil_png(gray_alpha)), np.dstack([gray] * 3))


def test_a_jpeg_named_png_decodes_by_its_content():
    smooth = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)  # red ramp
    smooth[..., 2] = 90
    ok, jpeg = cv2.imencode(".jpg", smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = decode_image(jpeg.tobytes())
    assert jpeg.tobytes()[:2] == b"\xff\xd8"  # really a JPEG
    assert np.abs(decoded.astype(int) - smooth).max() <= 8  # the picture, up to JPEG's loss


@pytest.mark.parametrize("data", [b"", b"this is text with a .png name\n", png(noise())[:200]],
                         ids=["zero bytes", "text", "truncated"])
def test_bytes_that_are_no_image_raise_a_value_error_with_their_size(data):
    with pytest.raises(ValueError, match=rf"cannot decode image \({len(data)} bytes\)"):
        decode_image(data)
    with pytest.raises(ValueError, match=rf"cannot decode mask \({len(data)} bytes\)"):
        decode_mask(data)


def mask_encodings() -> dict[str, bytes]:
    """The same person box stored in every encoding of the issue's list."""
    truth = person()
    as_255 = truth.astype(np.uint8) * 255
    antialiased = as_255.copy()
    edge = np.roll(truth, 1, axis=1) & ~truth  # the column right of the box: grey, as anti-aliasing leaves it
    antialiased[edge] = 127  # <= 127: background, as the article thresholds
    inner = truth & ~np.roll(truth, -1, axis=1)  # the box's last column, softened but still > 127
    antialiased[inner] = 128
    red = np.dstack([np.zeros_like(as_255), np.zeros_like(as_255), as_255])  # BGR
    alpha_inverted = np.dstack([as_255] * 3 + [255 - as_255])  # the alpha says the opposite
    return {
        "0/1": png(truth.astype(np.uint8)),
        "0/255": png(as_255),
        "anti-aliased": png(antialiased),
        "RGB white": png(np.dstack([as_255] * 3)),
        "RGB red": png(red),
        "RGBA": png(alpha_inverted),
        "0/2": png(truth.astype(np.uint8) * 2),  # exported label maps: two values, the larger is the person
        "0/38": png(truth.astype(np.uint8) * 38),
        "16-bit 0/65535": png(truth.astype(np.uint16) * 65535),
        "16-bit 0/1": png(truth.astype(np.uint16)),
        "palette": palette_png(truth, [(0, 0, 0), (255, 255, 255)]),
        "1-bit": pil_png(Image.fromarray(truth)),
    }


@pytest.mark.parametrize("encoding", list(mask_encodings()))
def test_every_mask_encoding_decodes_to_the_same_person(encoding):
    np.testing.assert_array_equal(decode_mask(mask_encodings()[encoding]), person())


def test_masks_threshold_at_127_and_sixteen_bits_at_its_high_byte():
    np.testing.assert_array_equal(decode_mask(png(np.array([[0, 2, 127, 128, 255]], np.uint8))),
                                  [[False, False, False, True, True]])
    np.testing.assert_array_equal(decode_mask(png(np.array([[0, 2, 32767, 32768, 65535]], np.uint16))),
                                  [[False, False, False, True, True]])


def test_all_zero_and_all_one_masks():
    assert not decode_mask(png(np.zeros((HEIGHT, WIDTH), np.uint8))).any()
    assert decode_mask(png(np.ones((HEIGHT, WIDTH), np.uint8))).all()
    assert decode_mask(png(np.full((HEIGHT, WIDTH), 255, np.uint8))).all()


def test_a_size_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match="mask is 24x32, image is 48x64"):
        check_same_size(noise(), np.zeros((24, 32), bool))
    check_same_size(noise(), np.zeros((HEIGHT, WIDTH), bool))


def test_training_skips_a_pair_of_different_sizes_with_the_message(tmp_path, caplog):
    for name, mask in (("same.png", person()), ("other.png", person(HEIGHT // 2, WIDTH // 2))):
        (tmp_path / f"image-{name}").write_bytes(png(noise()))
        (tmp_path / f"mask-{name}").write_bytes(png(mask.astype(np.uint8) * 255))
    batch = {"image_uri": np.array([str(tmp_path / "image-same.png"), str(tmp_path / "image-other.png")]),
             "mask_uri": np.array([str(tmp_path / "mask-same.png"), str(tmp_path / "mask-other.png")])}
    with caplog.at_level(logging.WARNING, logger="segray.train"):
        loaded = load_resized(batch, size=32)
    assert loaded["image"].shape == (1, 32, 32, 3) and loaded["mask"].shape == (1, 32, 32)
    assert f"training skips {tmp_path / 'image-other.png'}: mask is 24x32, image is 48x64" in caplog.text
    assert "image-same.png" not in caplog.text


# ---------------------------------------------------------------------------- the corpus


@functools.cache
def corpus_cases() -> dict[str, dict]:
    """image id (its path under images/) -> its bytes, its mask's bytes (None: no mask
    file; `mask_ext`: the mask's format, .png unless given) and what the row must say:
    status, a piece of the error, the ground truth's area in pixels, and where they are
    not the default, its `orientation` ("stored") and a piece of its `note` (None)."""
    good, box = png(noise()[..., ::-1]), person().astype(np.uint8)
    mask = png(box * 255)
    ok = {"status": "ok", "error": None, "true_area": int(box.sum())}
    cases = {
        "truncated.png": {"image": good[: len(good) // 3], "mask": mask, "status": "error",
                          "error": "cannot decode image"},
        "zero_bytes.png": {"image": b"", "mask": mask, "status": "error", "error": "cannot decode image (0 bytes)"},
        "text.png": {"image": b"hello, I am text\n", "mask": mask, "status": "error", "error": "cannot decode image"},
        "no_mask.png": {"image": good, "mask": None, "status": "error", "error": "missing mask"},
        "size_mismatch.png": {"image": good, "mask": png(person(24, 32).astype(np.uint8) * 255),
                              "status": "error", "error": "mask is 24x32, image is 48x64"},
        "bad_mask.png": {"image": good, "mask": b"not a mask", "status": "error", "error": "cannot decode mask"},
        "bomb.png": {"image": png_bomb(), "mask": mask, "status": "error",
                     "error": "image is 32768x32767 = 1,073,709,056 pixels, over the budget"},
        "mask_bomb.png": {"image": good, "mask": png_bomb(), "status": "error", "error": "mask is 32768x32767"},
        "radiance.png": {"image": HDR_BOMB, "mask": mask, "status": "error",
                         "error": "not a PNG, JPEG, WebP, BMP or TIFF file"},
        "jpeg_named.png": {"image": cv2.imencode(".jpg", noise())[1].tobytes(), "mask": mask, **ok},
        "rgba.png": {"image": png(np.dstack([noise(), np.full((HEIGHT, WIDTH), 7, np.uint8)])), "mask": mask, **ok},
        "gray.png": {"image": png(noise()[..., 0]), "mask": mask, **ok},
        "rgb16.png": {"image": png(noise().astype(np.uint16) * 257), "mask": mask, **ok},
        "palette.png": {"image": palette_png(box, [(10, 20, 30), (200, 100, 50)]), "mask": mask, **ok},
        "with space.png": {"image": good, "mask": mask, **ok},
        "ünïcödé 名前.png": {"image": good, "mask": mask, **ok},
        # Pairing is by exact stem: a case clash is two different pairs...
        "case.png": {"image": good, "mask": mask, **ok},
        "CASE.png": {"image": good, "mask": png(np.ones((HEIGHT, WIDTH), np.uint8) * 255), "status": "ok",
                     "error": None, "true_area": HEIGHT * WIDTH},
        # ...and an image whose mask differs only in case has no mask (the mask is named below).
        "Upper.png": {"image": good, "mask": None, "status": "error", "error": "missing mask"},
        "mask_all_zero.png": {"image": good, "mask": png(np.zeros((HEIGHT, WIDTH), np.uint8)), "status": "ok",
                              "error": None, "true_area": 0},
        "mask_all_one.png": {"image": good, "mask": png(np.ones((HEIGHT, WIDTH), np.uint8)), "status": "ok",
                             "error": None, "true_area": HEIGHT * WIDTH},
        # Of two images with one stem, the first by name pairs; the other is a pairing problem.
        "dup.jpg": {"image": cv2.imencode(".jpg", noise())[1].tobytes(), "mask": mask, **ok},
        # Subfolders pair by their path, as do OpenCV's other formats, any case.
        "day1/nested.png": {"image": good, "mask": mask, **ok},
        "webp.webp": {"image": encoded(".webp", noise()), "mask": encoded(".webp", box * 255), "mask_ext": ".webp", **ok},
        "bmp.bmp": {"image": encoded(".bmp", noise()), "mask": encoded(".bmp", box * 255), "mask_ext": ".bmp", **ok},
        "tif.tif": {"image": encoded(".tif", noise()), "mask": encoded(".tif", box * 255), "mask_ext": ".tif", **ok},
        "TIFF upper.TIFF": {"image": encoded(".tiff", noise()), "mask": encoded(".tiff", box * 255),
                            "mask_ext": ".TIFF", **ok},
        # A label map of several classes: no person by > 127, and the row says so.
        "label map.png": {"image": good, "mask": png(np.where(box, 5, np.arange(WIDTH) % 3).astype(np.uint8)),
                          "status": "ok", "error": None, "true_area": 0, "note": "label map with values [0, 1, 2, 5]"},
        # EXIF orientation 6: the mask fits the stored pixels, or the image as shown.
        "exif stored.jpg": {"image": exif_jpeg(noise(), 6), "mask": mask, **ok},
        "exif shown.jpg": {"image": exif_jpeg(np.rot90(noise(), 1), 6), "mask": mask, **ok, "orientation": "exif"},
    }
    for encoding, data in mask_encodings().items():
        cases[f"mask {encoding.replace('/', '-')}.png"] = {"image": good, "mask": data, **ok}
    big = np.zeros((BIG, BIG), bool)
    big[BIG // 4 : BIG // 2, BIG // 3 : BIG // 2] = True
    cases["big.png"] = {"image": png(np.dstack([big.astype(np.uint8) * 200] * 3)), "mask": png(big.astype(np.uint8)),
                        "status": "ok", "error": None, "true_area": int(big.sum())}
    return cases


# Files that are in the corpus but must not become rows, and where summary.json names them.
UNPAIRED = {"masks_without_image": ["orphan.png", "upper.png"], "same_stem_as_another": ["dup.png"]}
# What operating systems leave, in images/ and masks/: no rows, and named nowhere.
LEFT_BY_THE_SYSTEM = [".DS_Store", "Thumbs.db", "desktop.ini", "._with space.png", ".ipynb_checkpoints/case-checkpoint.png"]


@pytest.fixture(scope="module")
def corpus_run(ray_session, tmp_path_factory):
    """The corpus through jobs/evaluate.py with an untrained narrow UNet checkpoint."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    cases = corpus_cases()
    files = {}
    for name, case in cases.items():
        files[f"images/{name}"] = case["image"]
        if case["mask"] is not None:
            files[f"masks/{name.rsplit('.', 1)[0]}{case.get('mask_ext', '.png')}"] = case["mask"]
    files["images/dup.png"] = cases["with space.png"]["image"]
    files["masks/orphan.png"] = files["masks/upper.png"] = cases["with space.png"]["mask"]
    for name in LEFT_BY_THE_SYSTEM:
        files[f"images/{name}"] = files[f"masks/{name}"] = cases["with space.png"]["image"]
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    checkpoint = tmp_path_factory.mktemp("checkpoint") / "unet"
    params = {"base_width": 4}
    save_checkpoint(str(checkpoint), build_network("unet", params), {"model": "unet", "params": params,
                                                                     "image_size": 64})
    out = tmp_path_factory.mktemp("runs")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        status = job("evaluate")(["--preset", "demo", "--dataset", str(root), "--output", str(out), "--run-id",
                                  "corpus", "--models", "unet", "--checkpoint", f"unet={checkpoint}"])
    summary = json.loads((out / "corpus" / "summary.json").read_text())
    rows = pq.read_table(out / "corpus" / "predictions").to_pandas()
    return {"status": status, "summary": summary, "rows": rows, "cases": cases, "root": root,
            "console": console.getvalue()}


def test_every_image_yields_exactly_one_row(corpus_run):
    rows, cases = corpus_run["rows"], corpus_run["cases"]
    assert sorted(rows["image_id"]) == sorted(cases)  # rows in = rows out, no duplicates
    assert (rows["model"] == "unet").all()


def test_each_case_has_its_documented_outcome(corpus_run):
    rows = corpus_run["rows"].set_index("image_id")
    for name, case in corpus_run["cases"].items():
        row = rows.loc[name]
        assert row["status"] == case["status"], (name, row["error"])
        if case["status"] == "error":
            assert case["error"] in row["error"], name
            assert f"/{name}" in row["error"] or "missing mask" in row["error"], name  # says where
            assert row[["iou", "dice", "true_area", "image_orientation", "mask_note"]].isna().all(), name
        else:
            assert pd.isna(row["error"]), name
            assert row["image_orientation"] == case.get("orientation", "stored"), name
            assert (pd.isna(row["mask_note"]) if case.get("note") is None else case["note"] in row["mask_note"]), name
            assert row["true_area"] == case["true_area"], name  # the mask was decoded right
            assert 0 <= row["iou"] <= 1 and 0 <= row["boundary_iou"] <= 1, name
            size = (BIG, BIG) if name == "big.png" else (HEIGHT, WIDTH)
            assert decode_mask(row["mask_png"]).shape == size, name  # the prediction at the image's size


def test_an_all_zero_mask_is_scored_as_empty(corpus_run):
    row = corpus_run["rows"].set_index("image_id").loc["mask_all_zero.png"]
    assert row["empty"] and row["recall"] == 1.0
    assert row["iou"] == (1.0 if row["pred_area"] == 0 else 0.0)


def test_files_that_cannot_pair_are_named_in_the_summary(corpus_run):
    problems = corpus_run["summary"]["manifest"]["pairing_problems"]
    images, masks = corpus_run["root"] / "images", corpus_run["root"] / "masks"
    assert problems["masks_without_image"]["files"] == UNPAIRED["masks_without_image"]
    assert problems["same_stem_as_another"]["files"] == [str(images / name) for name in UNPAIRED["same_stem_as_another"]]
    assert sorted(problems["images_without_mask"]["files"]) == sorted(
        name for name, case in corpus_run["cases"].items() if case["mask"] is None
    )
    assert not (masks / "no_mask.png").exists()


def test_files_left_by_the_system_are_ignored_and_named_nowhere(corpus_run):
    problems = corpus_run["summary"]["manifest"]["pairing_problems"]
    named = [file for problem in problems.values() for file in problem["files"]]
    assert not [file for file in named for junk in LEFT_BY_THE_SYSTEM if file.endswith(junk)]
    assert problems["non_image_files"]["count"] == 0


def test_a_mask_without_a_person_by_the_rules_is_named_and_warned_about(corpus_run):
    noted = sorted(name for name, case in corpus_run["cases"].items() if case.get("note"))
    assert corpus_run["summary"]["masks"] == {"ambiguous": {"count": len(noted), "files": noted}}
    warnings = [line for line in corpus_run["console"].splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 1 of the masks may not mark the person (label map.png): their rows' mask_note says what "
                        "was found (summary.json: masks.ambiguous); name the person value(s) with --mask-person-values"]


def test_any_error_row_makes_the_run_partial_and_the_job_exit_1(corpus_run):
    summary, rows = corpus_run["summary"], corpus_run["rows"]
    errors = int((rows["status"] == "error").sum())
    assert errors == sum(case["status"] == "error" for case in corpus_run["cases"].values())
    images = len(corpus_run["cases"])
    assert summary["rows"] == {"expected": images, "written": images, "errors": errors,
                               "errors_by_model": {"unet": errors}}
    assert summary["status"] == "partial"
    assert corpus_run["status"] == 1


def test_the_reliability_table_names_real_tests_and_every_corpus_case():
    doc = (REPO / "docs" / "RELIABILITY.md").read_text()
    references = re.findall(r"`(test_\w+\.py)::(test_\w+)`", doc)
    assert len(references) > 20
    for file, name in references:
        assert f"def {name}(" in (REPO / "tests" / file).read_text(), f"{file}::{name}"
    for name in [*corpus_cases(), *(n for names in UNPAIRED.values() for n in names), *LEFT_BY_THE_SYSTEM]:
        assert f"`{name}`" in doc, name

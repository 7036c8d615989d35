import io

import albumentations as A
import cv2
import numpy as np
import pytest
from PIL import Image

from segray.data.decode import (
    EXIF,
    STORED,
    PairError,
    TooManyPixels,
    UnknownFormat,
    check_header,
    decode_image,
    decode_mask,
    decode_mask_noted,
    decode_pair,
    encode_mask,
    resize_mask,
    resize_pair,
)
from tests.conftest import HDR_BOMB, png_bomb


def test_resize_pair_equals_albumentations_resize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)
    mask = (rng.random((384, 512)) > 0.5).astype(np.uint8)
    expected = A.Resize(128, 128)(image=image, mask=mask)
    ours = resize_pair(image, mask, 128)
    np.testing.assert_array_equal(ours[0], expected["image"])
    np.testing.assert_array_equal(ours[1], expected["mask"])


def test_decode_image_is_rgb_and_mask_is_thresholded_at_127():
    image = np.zeros((3, 4, 3), np.uint8)
    image[..., 0] = 200  # red
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_image(png.tobytes()), image)
    mask = np.array([[0, 127, 128, 255]], np.uint8)
    ok, png = cv2.imencode(".png", mask)
    np.testing.assert_array_equal(decode_mask(png.tobytes()), [[False, False, True, True]])


def test_mask_png_round_trip_and_undecodable_bytes():
    mask = np.eye(5, dtype=bool)
    np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)
    with pytest.raises(ValueError, match="cannot decode image"):
        decode_image(b"not a png")


def test_resize_mask_handles_empty_prediction_and_other_sizes():
    assert not resize_mask(np.zeros((0, 0), bool), (3, 4)).any()
    assert resize_mask(np.ones((2, 2), bool), (6, 8)).shape == (6, 8)


# ---------------------------------------------------------------------------- odd data


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array))
    assert ok
    return data.tobytes()


def tagged(rgb: np.ndarray, orientation: int, fmt: str) -> bytes:
    """`rgb` stored as `fmt` (JPEG, PNG, WEBP or TIFF) with an EXIF orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 100}, "WEBP": {"lossless": True}}.get(fmt, {})
    Image.fromarray(rgb).save(buffer, fmt, exif=exif, **options)
    return buffer.getvalue()


def box(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[: shape[0] // 3, : shape[1] // 4] = True  # off-centre: a turned mask is another mask
    return mask


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_pair_is_decoded_in_the_orientation_its_mask_agrees_with(fmt, orientation):
    stored = np.zeros((30, 40, 3), np.uint8)  # smooth (JPEG keeps it), and no two pixels alike
    stored[..., 0] = np.linspace(0, 240, 40, dtype=np.uint8)[None]
    stored[..., 1] = np.linspace(0, 240, 30, dtype=np.uint8)[:, None]
    data = tagged(stored, orientation, fmt)
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    tolerance = 8 if fmt == "JPEG" else 0  # JPEG: up to its loss

    on_stored = decode_pair(data, png(box((30, 40)).astype(np.uint8) * 255))
    assert on_stored.orientation == STORED  # a mask the size of the stored pixels: always them
    assert np.abs(on_stored.image.astype(int) - stored).max() <= tolerance
    np.testing.assert_array_equal(on_stored.mask, box((30, 40)))

    on_shown = decode_pair(data, png(box(shown.shape[:2]).astype(np.uint8) * 255))
    if orientation >= 5:  # turned by 90 degrees: only the image as OpenCV shows it fits a 40x30 mask
        assert on_shown.orientation == EXIF
        np.testing.assert_array_equal(on_shown.image, shown)  # our turn is OpenCV's, for all eight
        assert on_shown.image.flags["C_CONTIGUOUS"]
    else:  # flips keep the size: both fit, the stored pixels win
        assert on_shown.orientation == STORED


def test_a_square_image_prefers_its_stored_pixels_and_a_misfit_names_both_sizes():
    square = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pair = decode_pair(tagged(square, 6, "PNG"), png(box((32, 32)).astype(np.uint8)))
    assert pair.orientation == STORED
    np.testing.assert_array_equal(pair.image, square)

    wide = np.zeros((30, 40, 3), np.uint8)
    with pytest.raises(PairError, match=r"mask is 20x20, image is 30x40 \(40x30 with its EXIF orientation\)") as error:
        decode_pair(tagged(wide, 6, "PNG"), png(np.zeros((20, 20), np.uint8)))
    assert error.value.part == "mask"
    with pytest.raises(PairError, match=r"^mask is 20x20, image is 30x40$"):  # no tag: the old message
        decode_pair(png(wide), png(np.zeros((20, 20), np.uint8)))
    with pytest.raises(PairError, match=r"cannot decode image \(3 bytes\)") as error:
        decode_pair(b"abc", png(np.zeros((20, 20), np.uint8)))
    assert error.value.part == "image"


@pytest.mark.parametrize("values", [(0, 1), (0, 255), (0, 2), (0, 38), (7, 200)])
def test_a_mask_of_two_values_is_binary_and_the_larger_is_the_person(values):
    truth = box((12, 16))
    for dtype in (np.uint8, np.uint16):
        stored = np.where(truth, values[1], values[0]).astype(dtype)
        mask, note = decode_mask_noted(png(stored))
        np.testing.assert_array_equal(mask, truth)
        assert note is None
    np.testing.assert_array_equal(decode_mask(png(np.where(truth, 0, 1000).astype(np.uint16))), ~truth)


def test_a_label_map_the_articles_rule_empties_is_noted_unless_the_person_is_named():
    labels = np.array([[0, 1, 2, 5], [5, 5, 0, 0]], np.uint8)
    mask, note = decode_mask_noted(png(labels))
    assert not mask.any()
    assert note == ("label map with values [0, 1, 2, 5]: the > 127 rule finds no person; "
                    "name the person value(s) with --mask-person-values")
    for person, expected in (([5], labels == 5), ([2, 5], np.isin(labels, [2, 5]))):
        mask, note = decode_mask_noted(png(labels), person)
        np.testing.assert_array_equal(mask, expected)
        assert note is None
    np.testing.assert_array_equal(decode_mask(png(labels.astype(np.uint16) * 1000), [5000]), labels == 5)

    many = np.arange(20, dtype=np.uint16)[None] * 100  # 16 bits: the high bytes are all < 128
    assert decode_mask_noted(png(many))[1].startswith("mask with values [0, 100, 200, 300, 400, 500, 600, 700, ... "
                                                      "(20 values)]: the > 127 rule finds no person")
    assert decode_mask_noted(png(np.full((4, 4), 38, np.uint8)))[1].startswith("mask with values [38]")
    # Nothing to say: all background, all person, or a rule that finds the person.
    for clear in (np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), np.array([[0, 100, 200]], np.uint8)):
        assert decode_mask_noted(png(clear))[1] is None


@pytest.mark.parametrize("ext", [".webp", ".bmp", ".tif", ".tiff"])
def test_every_accepted_format_decodes_as_image_and_mask(ext):
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    ok, image = cv2.imencode(ext, rgb[..., ::-1])
    ok_mask, mask = cv2.imencode(ext, box((30, 40)).astype(np.uint8) * 255)
    assert ok and ok_mask
    pair = decode_pair(image.tobytes(), mask.tobytes())
    np.testing.assert_array_equal(pair.image, rgb)  # these encoders are lossless by default
    np.testing.assert_array_equal(pair.mask, box((30, 40)))
    assert pair.orientation == STORED and pair.mask_note is None


@pytest.mark.parametrize(("data", "kind", "size"), [
    (png_bomb(), "PNG", (32768, 32767)),
    (cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes(), "JPEG", (40, 30)),
    (cv2.imencode(".webp", np.zeros((30, 40, 3), np.uint8))[1].tobytes(), "WebP", (40, 30)),
    (cv2.imencode(".webp", np.zeros((30, 40, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(), "WebP",
     (40, 30)),
    (cv2.imencode(".bmp", np.zeros((30, 40, 3), np.uint8))[1].tobytes(), "BMP", (40, 30)),
    (cv2.imencode(".tiff", np.zeros((30, 40, 3), np.uint8))[1].tobytes(), "TIFF", (40, 30)),
])
def test_the_header_says_format_and_size_without_decoding(data, kind, size):
    assert check_header(data, "image", max_pixels=2**40) == (kind, *size)


def test_an_image_over_the_pixel_budget_or_in_another_format_is_not_decoded():
    with pytest.raises(TooManyPixels, match=r"image is 32768x32767 = 1,073,709,056 pixels, over the budget of "
                                            r"100,000,000 \(data.max_pixels\)"):
        decode_image(png_bomb())
    with pytest.raises(TooManyPixels, match="mask is 40x30"):
        decode_mask(cv2.imencode(".png", np.zeros((30, 40), np.uint8))[1].tobytes(), max_pixels=1000)
    with pytest.raises(UnknownFormat, match=r"cannot decode image \(\d+ bytes\): not a PNG, JPEG, WebP, BMP or TIFF"):
        decode_image(HDR_BOMB)

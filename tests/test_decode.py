import albumentations as A
import cv2
import numpy as np
import pytest

from segray.data.decode import decode_image, decode_mask, encode_mask, resize_mask, resize_pair


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

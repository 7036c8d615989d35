"""Decoding and resizing with OpenCV and numpy only.

Ray Data's decode and score tasks import this module, not albumentations or torch
(importing those costs ~10 s per fresh worker process on a small machine).
"""

from __future__ import annotations

import cv2
import numpy as np

# The seeds binarise masks with `mask > 127`.
MASK_THRESHOLD = 127


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> RGB uint8 array (H, W, 3). Raises ValueError if undecodable.

    The format is read from the content, not the name (a JPEG named .png decodes). Gray
    is repeated over R, G and B; a palette is expanded to its colours; alpha is dropped
    (not composited); 16 bits per channel become 8 by keeping the high byte."""
    return cv2.cvtColor(_imdecode(data, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> boolean mask (H, W). Raises ValueError if undecodable.

    A mask whose largest value is 1 is a label mask: 1 is the person. Any other mask is
    thresholded as the seeds do, `> 127` (on the high byte of a 16-bit mask), which also
    settles anti-aliased edges. A colour mask (RGB, RGBA, palette) is the person wherever
    any colour channel passes; its alpha channel is ignored."""
    # ANYDEPTH keeps 16 bits; ANYCOLOR keeps gray as one channel and drops alpha.
    values = _imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR, "mask")
    if values.ndim == 3:
        values = values.max(axis=2)
    if values.max(initial=0) == 1:
        return values == 1
    if values.dtype == np.uint16:
        values = values >> 8
    return values > MASK_THRESHOLD


def _imdecode(data: bytes, flags: int, what: str) -> np.ndarray:
    """cv2.imdecode, raising ValueError for bytes that are no image. (OpenCV returns None
    for most, but fails an assertion on an empty buffer.)"""
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if decoded is None:
        raise ValueError(f"cannot decode {what} ({len(data)} bytes)")
    return decoded


def check_same_size(image: np.ndarray, mask: np.ndarray) -> None:
    """Raise ValueError unless an image and its mask have the same height and width:
    a mask of another size cannot say which pixels are the person."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"mask is {mask.shape[0]}x{mask.shape[1]}, image is {image.shape[0]}x{image.shape[1]}")


def encode_mask(mask: np.ndarray) -> bytes:
    """Boolean mask -> PNG bytes with values 0/255."""
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise ValueError("cannot encode mask as PNG")
    return png.tobytes()


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """albumentations' `Resize(size, size)` on an image/mask pair, without importing it:
    bilinear for the image, nearest for the mask (its defaults; a test checks equality)."""
    return (
        cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR),
        cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST),
    )


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest) to `shape` (H, W); an empty 0x0 mask becomes all False."""
    if mask.size == 0:
        return np.zeros(shape, bool)
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)

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
    """PNG/JPEG bytes -> RGB uint8 array (H, W, 3). Raises ValueError if undecodable."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes -> boolean mask (H, W): pixel > 127. Raises ValueError if undecodable."""
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"cannot decode mask ({len(data)} bytes)")
    return mask > MASK_THRESHOLD


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

"""Decoding and resizing with OpenCV and numpy only.

Ray Data's decode and score tasks import this module, not albumentations or torch
(importing those costs ~10 s per fresh worker process on a small machine).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from segray.config import DEFAULT_MAX_PIXELS

# The article binarises masks with `mask > 127`.
MASK_THRESHOLD = 127
# Which pixels of an image were scored (the rows' `image_orientation`).
STORED = "stored"  # the pixels as the file stores them
EXIF = "exif"  # the image turned by its EXIF orientation, as viewers show it
# EXIF orientation (tag 0x0112) -> the flip or turn from the stored pixels to the shown image.
# Checked against OpenCV's own orientation of all eight (tests/test_decode.py).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
UNDO_ORIENTATION = {**{o: o for o in ORIENTATIONS}, 6: 8, 8: 6}  # the others undo themselves
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
ORIENTATION_TAG = 0x0112
NOTE_VALUES_SHOWN = 8  # values a mask note lists before "..."
FORMATS = "PNG, JPEG, WebP, BMP or TIFF"  # the only ones decoded, recognised by their first bytes


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the budget: it is not decoded."""


class UnknownFormat(ValueError):
    """Bytes that are none of FORMATS: they are not decoded."""


class PairError(ValueError):
    """An image and its mask that cannot be scored; `part` names the file at fault
    ("image" or "mask") so that the caller can say where."""

    def __init__(self, part: str, message: str):
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class DecodedPair:
    """What `decode_pair` makes of an image and its mask: the two agree in size."""

    image: np.ndarray  # RGB uint8 (H, W, 3), in the orientation the mask agrees with
    mask: np.ndarray  # bool (H, W): the person
    orientation: str  # STORED or EXIF: which pixels of the image `image` is
    mask_note: str | None  # why the mask's person may be wrong (see decode_mask_noted), else None


def decode_pair(image_data: bytes, mask_data: bytes, person_values: Sequence[int] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPair:
    """An image and its mask, decoded so that they agree. Raises PairError.

    An image with an EXIF orientation has two readings: its stored pixels, and the image
    turned as viewers show it (which OpenCV's IMREAD_COLOR would give). The mask decides:
    the reading whose height and width are the mask's is used. When both fit (a square
    image turned by 90 degrees, or an orientation that only flips), the stored pixels
    win: a mask is most often made from the pixels a program reads, and they are the
    ones that fit whatever the orientation. The mask itself is read as stored (its own
    orientation tag, if any, is ignored, so a mask that copied its image's tag stays
    aligned with the image's stored pixels). Training, evaluation and the report's
    gallery all decode pairs here. Neither file is decoded when its header declares more
    than `max_pixels` pixels (`check_header`)."""
    # Whatever fails while decoding a file is that file's fault (OpenCV raises cv2.error too).
    try:
        stored, orientation = _decode_stored(image_data, cv2.IMREAD_COLOR, "image", max_pixels)
        stored = cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)
    except Exception as error:
        raise PairError("image", str(error)) from error
    try:
        mask, note = decode_mask_noted(mask_data, person_values, max_pixels)
    except Exception as error:
        raise PairError("mask", str(error)) from error
    shown = ORIENTATIONS[orientation](stored)
    if stored.shape[:2] != mask.shape and shown.shape[:2] == mask.shape:
        return DecodedPair(np.ascontiguousarray(shown), mask, EXIF, note)
    try:
        check_same_size(stored, mask)
    except ValueError as error:
        turned = f" ({shown.shape[0]}x{shown.shape[1]} with its EXIF orientation)" if shown.shape != stored.shape else ""
        raise PairError("mask", f"{error}{turned}") from None
    return DecodedPair(stored, mask, STORED, note)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image bytes -> RGB uint8 array (H, W, 3) of its stored pixels (EXIF orientation not
    applied: `decode_pair` chooses). Raises ValueError if undecodable.

    The format is read from the content, not the name (a JPEG named .png decodes). Gray
    is repeated over R, G and B; a palette is expanded to its colours; alpha is dropped
    (not composited); 16 bits per channel become 8 by keeping the high byte."""
    return cv2.cvtColor(_decode_stored(data, cv2.IMREAD_COLOR, "image", max_pixels)[0], cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes, person_values: Sequence[int] | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Mask bytes -> boolean person mask (H, W), by the rules of `decode_mask_noted`."""
    return decode_mask_noted(data, person_values, max_pixels)[0]


def decode_mask_noted(data: bytes, person_values: Sequence[int] | None = None,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str | None]:
    """Mask bytes -> (boolean person mask (H, W), a note or None). Raises ValueError if
    undecodable.

    A colour mask (RGB, RGBA, palette) is reduced to its brightest colour channel; alpha
    is ignored. Then, on the values of the mask as stored (8 or 16 bits):
    - `person_values` given: the person is where the mask has one of them;
    - exactly two distinct values: a binary mask, the larger value is the person
      ({0, 1}, {0, 255}, {0, 2}, {0, 38} alike: exported label maps use any value);
    - one value: 1 is the person (an all-person label mask), else the rule below;
    - otherwise the article's `> 127` (on the high byte of a 16-bit mask), which settles
      anti-aliased edges. When it finds no person in a mask that has non-zero pixels
      (a multi-class label map such as {0, 1, 2, 5}), the note says what was found."""
    # ANYDEPTH keeps 16 bits; ANYCOLOR keeps gray as one channel and drops alpha.
    values, _ = _decode_stored(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR, "mask", max_pixels)
    if values.ndim == 3:
        values = values.max(axis=2)
    if person_values:
        return np.isin(values, list(person_values)), None
    distinct = _distinct(values)
    if len(distinct) == 2:
        return values == distinct[1], None
    if len(distinct) == 1 and distinct[0] == 1:
        return values == 1, None
    mask = (values >> 8 if values.dtype == np.uint16 else values) > MASK_THRESHOLD
    if mask.any() or not distinct.any():
        return mask, None
    shown = ", ".join(str(v.item()) for v in distinct[:NOTE_VALUES_SHOWN])
    if len(distinct) > NOTE_VALUES_SHOWN:
        shown += f", ... ({len(distinct)} values)"
    kind = "label map" if len(distinct) > 2 and distinct.max() < 128 else "mask"
    return mask, (f"{kind} with values [{shown}]: the > 127 rule finds no person; "
                  "name the person value(s) with --mask-person-values")


def _distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a mask: a histogram for 8 and 16 bits (an 8000x8000
    mask: 0.06 s, where np.unique sorts and np.bincount took 1 s)."""
    if values.dtype in (np.uint8, np.uint16):
        bins = 1 << (8 * values.itemsize)
        return np.flatnonzero(cv2.calcHist([values], [0], None, [bins], [0, bins]).ravel())
    return np.unique(values)


def check_header(data: bytes, what: str, max_pixels: int) -> tuple[str, int, int]:
    """The format, width and height the bytes' header declares, read without decoding
    them. Raises UnknownFormat for bytes that are none of FORMATS (OpenCV would decode
    more, e.g. Radiance HDR), TooManyPixels for an image over `max_pixels` (a small PNG or
    HDR file can declare gigabytes of pixels)."""
    kind, width, height = _header(data, what)
    if width * height > max_pixels:
        raise TooManyPixels(f"{what} is {width}x{height} = {width * height:,} pixels, over the budget of "
                            f"{max_pixels:,} (data.max_pixels)")
    return kind, width, height


def _header(data: bytes, what: str) -> tuple[str, int, int]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return ("PNG", *struct.unpack(">II", data[16:24]))
    if data[:2] == b"BM" and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
            return ("BMP", *struct.unpack("<HH", data[18:22]))
        width, height = struct.unpack("<ii", data[18:26])
        return "BMP", abs(width), abs(height)  # a negative height is a top-down bitmap
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return "WebP", 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return "WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return "WebP", width & 0x3FFF, height & 0x3FFF
    if data[:3] == b"\xff\xd8\xff" or data[:4] in TIFF_MAGIC:
        from PIL import Image

        # Pillow reads a JPEG's markers up to its first scan, a TIFF's first directory: no pixels.
        kind = "JPEG" if data[0] == 0xFF else "TIFF"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=[kind]) as image:
                    return (kind, *image.size)
        except Image.DecompressionBombError as error:
            raise TooManyPixels(f"{what}: {error}") from None
        except Exception as error:
            raise ValueError(f"cannot decode {what} ({len(data)} bytes): its {kind} header: {error}") from None
    raise UnknownFormat(f"cannot decode {what} ({len(data)} bytes): not a {FORMATS} file")


def _decode_stored(data: bytes, flags: int, what: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """The stored pixels (OpenCV channel order) and the EXIF orientation (1 to 8; 1 when
    there is none), once `check_header` let them through. Raises ValueError for bytes that
    are no image (OpenCV returns None for most)."""
    check_header(data, what, max_pixels)
    decoded, kinds, metadata = (cv2.imdecodeWithMetadata(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
                                if data else (None, (), ()))
    if decoded is None:
        raise ValueError(f"cannot decode {what} ({len(data)} bytes)")
    if data[:4] in TIFF_MAGIC:
        # A TIFF is turned by its own Orientation tag whatever the flags: undo it.
        orientation = _orientation(data)
        return np.ascontiguousarray(ORIENTATIONS[UNDO_ORIENTATION[orientation]](decoded)), orientation
    exif = next((bytes(m.ravel()) for kind, m in zip(kinds, metadata) if kind == cv2.IMAGE_METADATA_EXIF), b"")
    return decoded, _orientation(exif)


def _orientation(tiff: bytes) -> int:
    """The Orientation tag of a TIFF structure (an EXIF block is one), 1 when it has none."""
    if tiff[:4] not in TIFF_MAGIC:
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, offset)
        for entry in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, kind, _, value = struct.unpack_from(order + "HHIH", tiff, entry)
            if tag == ORIENTATION_TAG:
                return value if kind == 3 and value in ORIENTATIONS else 1  # kind 3: SHORT
    except struct.error:  # a truncated block: no tag we can trust
        pass
    return 1


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

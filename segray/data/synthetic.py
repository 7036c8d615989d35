"""A synthetic stand-in for the Kaggle MADS person-segmentation set.

Each sample is an indoor scene with one dressed person in a dance or martial-arts pose
(the mask) and, in about 30 % of samples, a plastic mannequin that is *not* in the mask.
File names follow MADS (`Kata_Kata2_C1_00135.png`) and the category biases the pose.

Everything is a pure function of (index, seed): a sample never depends on another, so
any subset can be rendered on its own, in any order, on any worker, bit for bit. The
scene is drawn twice with the same primitives: into a label map with anti-aliasing off
(which gives the exact mask) and, through that label map, into the colour image.

The figures (person, mannequin) and the colour helpers are in segray.data.synthetic_figure;
this module holds the file names, the room, the camera and the public API.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from segray.data.synthetic_figure import (
    HAIR_COLOURS,
    HEIGHT,
    SHOE_COLOURS,
    SKIN_DARK,
    SKIN_LIGHT,
    WIDTH,
    Layout,
    cloth_colour,
    crop_slices,
    direction,
    draw,
    hsv,
    is_person,
    jitter,
    mottle,
    muted_colour,
    paint_mannequin,
    paint_person,
    pick,
    place_figures,
    rgb,
)

CATEGORIES: tuple[str, ...] = ("HipHop", "Jazz", "Kata", "Sports", "Taichi")

# Name space: category x sequence (1..3) x camera (C0..C2) x frame (0, 5, ..., 99995).
_SEQUENCES = 3
_CAMERAS = 3
_FRAMES = 20_000
_FRAME_STEP = 5
_NAME_SLOTS = len(CATEGORIES) * _SEQUENCES * _CAMERAS * _FRAMES  # 900,000 distinct names


# ----------------------------------------------------------------------------- names


@lru_cache(maxsize=64)
def _name_permutation(seed: int) -> tuple[int, int]:
    """(a, b) of the bijection index -> (a * index + b) mod _NAME_SLOTS for this seed."""
    rng = np.random.default_rng((seed, 0x6E616D65))  # its own stream, apart from the samples'
    while True:
        a = int(rng.integers(1, _NAME_SLOTS))
        if math.gcd(a, _NAME_SLOTS) == 1:  # coprime: the map is a permutation, so names are unique
            return a, int(rng.integers(0, _NAME_SLOTS))


def _name_parts(index: int, seed: int) -> tuple[str, int, int, int]:
    """(category, sequence number, camera, frame) of a sample."""
    if not 0 <= index < _NAME_SLOTS:
        raise ValueError(f"index must be in [0, {_NAME_SLOTS}), got {index}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    a, b = _name_permutation(seed)
    slot = (a * index + b) % _NAME_SLOTS
    slot, frame = divmod(slot, _FRAMES)
    slot, camera = divmod(slot, _CAMERAS)
    category, sequence = divmod(slot, _SEQUENCES)
    return CATEGORIES[category], sequence + 1, camera, frame * _FRAME_STEP


def sample_name(index: int, seed: int = 0) -> str:
    """MADS-style file name of sample `index`, e.g. "Kata_Kata2_C1_00135.png".

    Distinct for every index in [0, 900000) under one seed; no rendering involved.
    """
    category, sequence, camera, frame = _name_parts(index, seed)
    return f"{category}_{category}{sequence}_C{camera}_{frame:05d}.png"


# ----------------------------------------------------------------------------- the room


def _floor(rng: np.random.Generator, image: np.ndarray, horizon: int) -> None:
    """Wood planks, tiles in perspective, or plain carpet below the horizon."""
    kind = rng.choice(3)
    depth = HEIGHT - horizon
    if kind == 0:
        colour = hsv(rng.uniform(0.04, 0.1), rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.75))
    elif kind == 1:
        colour = jitter(rng, pick(rng, ((200, 200, 195), (170, 160, 140), (120, 120, 125))), 15)
    else:
        colour = muted_colour(rng)
    cv2.rectangle(image, (0, horizon), (WIDTH, HEIGHT), rgb(colour), -1)
    if kind == 2:
        return
    line = rgb(colour * rng.uniform(0.55, 0.8))
    rows = int(rng.integers(6, 14))
    edges = [horizon + int(depth * (k / rows) ** 1.7) for k in range(rows + 1)]  # wider towards the camera
    for top, bottom in zip(edges, edges[1:]):
        if kind == 0:  # planks differ a little in shade
            cv2.rectangle(image, (0, top), (WIDTH, bottom), rgb(colour * rng.uniform(0.9, 1.1)), -1)
        cv2.line(image, (0, top), (WIDTH, top), line, 1, cv2.LINE_AA)
    if kind == 1:  # tile seams converge on a vanishing point on the horizon
        vanish = rng.uniform(0.2, 0.8) * WIDTH
        for x in np.arange(-2 * WIDTH, 3 * WIDTH, rng.uniform(50, 110)):
            cv2.line(image, (int(vanish), horizon), (int(x), HEIGHT), line, 1, cv2.LINE_AA)


def _clutter(rng: np.random.Generator, image: np.ndarray, horizon: int, palette: list[np.ndarray]) -> None:
    """Doors, frames, windows, furniture, lamps, balls and limb-like sticks. About a third
    take a person's colour (shirt, trousers, skin), so colour alone does not find the person."""

    def colour() -> tuple[float, ...]:
        base = jitter(rng, pick(rng, palette), 20) if rng.random() < 0.35 else muted_colour(rng)
        return rgb(base)

    def darker(c: tuple[float, ...], f: float = 0.6) -> tuple[float, ...]:
        return tuple(v * f for v in c)

    floor_depth = HEIGHT - horizon
    for _ in range(int(rng.integers(4, 10))):
        kind = rng.choice(["door", "frame", "window", "furniture", "furniture", "lamp", "ball", "stick"])
        c = colour()
        if kind == "door":
            w, h = rng.uniform(0.1, 0.18) * WIDTH, rng.uniform(0.6, 0.95) * horizon
            x = rng.uniform(0, WIDTH - w)
            cv2.rectangle(image, (int(x), int(horizon - h)), (int(x + w), horizon), c, -1, cv2.LINE_AA)
            cv2.rectangle(image, (int(x), int(horizon - h)), (int(x + w), horizon), darker(c), 3, cv2.LINE_AA)
            cv2.circle(image, (int(x + 0.85 * w), int(horizon - 0.45 * h)), 3, darker(c, 0.4), -1, cv2.LINE_AA)
        elif kind in ("frame", "window"):
            w, h = rng.uniform(20, 110), rng.uniform(20, 90)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, max(1, horizon - h - 10))
            inner = rgb(hsv(0.58, 0.15, 0.97)) if kind == "window" else colour()
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), inner, -1, cv2.LINE_AA)
            border = int(rng.integers(2, 7))
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), c, border, cv2.LINE_AA)
            if kind == "window":
                cv2.line(image, (int(x + w / 2), int(y)), (int(x + w / 2), int(y + h)), c, 3, cv2.LINE_AA)
                cv2.line(image, (int(x), int(y + h / 2)), (int(x + w), int(y + h / 2)), c, 3, cv2.LINE_AA)
        elif kind == "furniture":  # a box standing on the floor, top face lighter
            w, h = rng.uniform(40, 200), rng.uniform(20, 130)
            x, bottom = rng.uniform(-w / 2, WIDTH - w / 2), horizon + rng.uniform(0.05, 0.9) * floor_depth
            top = max(0.0, bottom - h)
            cv2.rectangle(image, (int(x), int(top)), (int(x + w), int(bottom)), c, -1, cv2.LINE_AA)
            lid = tuple(min(255.0, v * 1.2) for v in c)
            cv2.rectangle(image, (int(x), int(top)), (int(x + w), int(top + 0.15 * h)), lid, -1, cv2.LINE_AA)
        elif kind == "lamp":
            x, bottom = rng.uniform(0, WIDTH), horizon + rng.uniform(0.0, 0.5) * floor_depth
            top = bottom - rng.uniform(0.3, 0.8) * HEIGHT
            pole = int(rng.integers(2, 6))
            cv2.line(image, (int(x), int(bottom)), (int(x), int(top)), darker(c, 0.5), pole, cv2.LINE_AA)
            shade = np.array([[x - 18, top + 22], [x + 18, top + 22], [x + 10, top], [x - 10, top]], np.int32)
            cv2.fillPoly(image, [shade], c, cv2.LINE_AA)
        elif kind == "ball":
            centre = (int(rng.uniform(0, WIDTH)), int(rng.uniform(0, HEIGHT)))
            cv2.circle(image, centre, int(rng.uniform(6, 30)), c, -1, cv2.LINE_AA)
        else:  # a towel, pipe or broom: shaped like a limb
            a = np.array([rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)])
            b = a + direction(rng.uniform(0, 2 * math.pi), 1) * rng.uniform(30, 120)
            cv2.line(image, tuple(map(int, a)), tuple(map(int, b)), c, int(rng.integers(4, 20)), cv2.LINE_AA)


def _shadow(image: np.ndarray, box: np.ndarray | None, strength: float) -> None:
    """A soft dark ellipse on the floor under a figure's feet."""
    if box is None:
        return
    axes = (max(1, int(0.45 * (box[2] - box[0]))), max(1, int(0.05 * (box[3] - box[1]))))
    sigma = max(1.0, axes[1] / 2)
    reach = np.array(axes) + 3 * sigma  # the blur spreads the ellipse this far
    centre = np.array([(box[0] + box[2]) / 2, box[3]])
    crop = crop_slices(np.concatenate([centre - reach, centre + reach]))
    if crop is None:
        return
    shade = np.zeros(image[crop].shape[:2], np.float32)
    local = (int(centre[0]) - crop[1].start, int(centre[1]) - crop[0].start)
    cv2.ellipse(shade, local, axes, 0, 0, 360, strength, -1)
    image[crop] *= 1 - cv2.GaussianBlur(shade, (0, 0), sigma)[..., None]


def _room(rng: np.random.Generator, layout: Layout, palette: list[np.ndarray]) -> np.ndarray:
    """The background, float32 (H, W, 3) RGB: wall, floor, skirting board, clutter, shadows."""
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    wall = muted_colour(rng)
    cv2.rectangle(image, (0, 0), (WIDTH, layout.horizon), rgb(wall), -1)  # faster than numpy broadcasting
    if rng.random() < 0.25:  # wallpaper stripes
        period = rng.uniform(12, 40)
        for x in np.arange(0, WIDTH, period):
            image[: layout.horizon, int(x):int(x + period / 2)] *= 0.93
    _floor(rng, image, layout.horizon)
    skirting = rgb(muted_colour(rng) if rng.random() < 0.5 else wall * 0.7)
    cv2.line(image, (0, layout.horizon), (WIDTH, layout.horizon), skirting, int(rng.integers(2, 8)))
    _clutter(rng, image, layout.horizon, palette)
    _shadow(image, layout.person_box, rng.uniform(0.2, 0.5))
    _shadow(image, layout.mannequin_box, rng.uniform(0.2, 0.5))
    return image


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Uneven light, vignette, lens blur, exposure, white balance and sensor noise: float -> uint8."""
    # The light varies slowly, so it is computed on a 1/8 grid and upsampled, straight to
    # one value per colour sample (H, W * 3): the three samples of a pixel get nearly the same
    # light, and the product is one fast single-channel multiply that also casts to uint8.
    yy = np.linspace(-1, 1, HEIGHT // 8, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, WIDTH // 8, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * math.pi)
    gradient = 1 + rng.uniform(0, 0.35) * (math.cos(angle) * xx + math.sin(angle) * yy)
    vignette = 1 - rng.uniform(0.1, 0.45) * (xx**2 + yy**2) / 2
    blotches = mottle(rng, gradient.shape, 6, 0.08)  # lamps, stains
    light = cv2.resize(gradient * vignette * blotches, (WIDTH * 3, HEIGHT), interpolation=cv2.INTER_LINEAR)
    frame = cv2.multiply(image.reshape(HEIGHT, WIDTH * 3), light, dtype=cv2.CV_8U).reshape(HEIGHT, WIDTH, 3)
    frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.5, 1.0))
    # Exposure and white balance as one lookup table per channel (cheap on uint8).
    gains = rng.uniform(0.6, 1.25) * rng.uniform(0.9, 1.1, 3)
    table = np.clip(np.arange(256, dtype=np.float32)[:, None] * gains, 0, 255).astype(np.uint8)
    frame = cv2.LUT(frame, table[:, None, :])
    # Sensor noise: the difference of two uniform draws in [0, 3] or [0, 7] (std 1.6 or 3.2),
    # added with saturation. The low and high bits of random bytes are far cheaper than normal draws.
    bits = np.uint8(3 if rng.random() < 0.5 else 7)
    noise = np.frombuffer(rng.bytes(frame.size), np.uint8).reshape(frame.shape)
    return cv2.subtract(cv2.add(frame, noise & bits), (noise >> 4) & bits)


# ----------------------------------------------------------------------------- samples


def render_sample(index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Render sample `index`: (RGB image uint8 (384, 512, 3), mask uint8 (384, 512) in {0, 255},
    whether a mannequin distractor is in the picture). The mannequin is never in the mask."""
    category = _name_parts(index, seed)[0]
    rng = np.random.default_rng((seed, index))
    layout = place_figures(rng, category)

    colours = {
        "skin": jitter(rng, np.array(SKIN_LIGHT) + rng.random() * (np.array(SKIN_DARK) - SKIN_LIGHT), 12),
        "hair": jitter(rng, pick(rng, HAIR_COLOURS), 10),
        "shirt": cloth_colour(rng),
        "shoes": jitter(rng, pick(rng, SHOE_COLOURS), 10),
    }
    for _ in range(10):  # trousers in another colour than the shirt
        colours["trousers"] = cloth_colour(rng)
        if np.abs(colours["trousers"] - colours["shirt"]).sum() > 90:
            break
    image = _room(rng, layout, [colours["shirt"], colours["trousers"], colours["skin"]])

    # The mannequin first, so the person (closer to the camera) covers it where they overlap.
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    if layout.mannequin is not None:
        draw(labels, layout.mannequin)
        paint_mannequin(rng, image, labels, layout.mannequin_box)
    draw(labels, layout.person)
    paint_person(rng, image, labels, layout.person_box, colours)

    mask = np.where(is_person(labels), np.uint8(255), np.uint8(0))
    return _camera(rng, image), mask, layout.mannequin is not None


def render_distractor_mask(index: int, seed: int = 0) -> np.ndarray | None:
    """The mannequin's whole silhouette in sample `index` (uint8, {0, 255}), including any part
    hidden behind the person, or None when the sample has no mannequin. For checking that
    the distractor stays out of the mask."""
    category = _name_parts(index, seed)[0]
    layout = place_figures(np.random.default_rng((seed, index)), category)
    if layout.mannequin is None:
        return None
    silhouette = np.zeros((HEIGHT, WIDTH), np.uint8)
    draw(silhouette, layout.mannequin, 255)
    return silhouette


# ----------------------------------------------------------------------------- writing


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a hidden temp file and a rename, so `path` is either absent or complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: parallel writers don't collide
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("cannot encode PNG")
    return encoded.tobytes()


def write_synthetic(root: str | os.PathLike, n: int, seed: int = 0) -> Path:
    """Write samples 0..n-1 as root/images/<name> and root/masks/<name> (PNG), then root/.complete.

    Renders one sample at a time and skips files that exist, so an interrupted run resumes
    where it stopped. Returns at once if root/.complete records the same n and seed.
    Raises ValueError if root holds a set with another seed or more samples (its extra
    files would silently join this set).
    """
    if not 0 <= n <= _NAME_SLOTS:
        raise ValueError(f"n must be in [0, {_NAME_SLOTS}], got {n}")
    root = Path(root)
    marker = root / ".complete"
    wanted = {"n": n, "seed": seed}
    if marker.exists():
        found = json.loads(marker.read_text())
        if found == wanted:
            return root
        if found.get("seed") != seed or found.get("n", 0) > n:
            raise ValueError(f"{root} already holds a synthetic set {found}, not {wanted}: use another folder")
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        name = sample_name(index, seed)
        image_path, mask_path = images / name, masks / name
        if image_path.exists() and mask_path.exists():
            continue
        image, mask, _ = render_sample(index, seed)
        if not image_path.exists():
            _write_atomic(image_path, _png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)))
        if not mask_path.exists():
            _write_atomic(mask_path, _png(mask))
    _write_atomic(marker, json.dumps(wanted).encode())
    return root

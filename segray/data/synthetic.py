"""A synthetic stand-in for the Kaggle MADS person-segmentation set.

Each sample is an indoor scene with one dressed person in a dance or martial-arts pose
(the mask) and, in about 30 % of samples, a plastic mannequin that is *not* in the mask.
File names follow MADS (`Kata_Kata2_C1_00135.png`) and the category biases the pose.

Everything is a pure function of (index, seed): a sample never depends on another, so
any subset can be rendered on its own, in any order, on any worker, bit for bit. The
scene is drawn twice with the same primitives: into a label map with anti-aliasing off
(which gives the exact mask) and, through that label map, into the colour image.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

CATEGORIES: tuple[str, ...] = ("HipHop", "Jazz", "Kata", "Sports", "Taichi")
WIDTH, HEIGHT = 512, 384

# Name space: category x sequence (1..3) x camera (C0..C2) x frame (0, 5, ..., 99995).
_SEQUENCES = 3
_CAMERAS = 3
_FRAMES = 20_000
_FRAME_STEP = 5
_NAME_SLOTS = len(CATEGORIES) * _SEQUENCES * _CAMERAS * _FRAMES  # 900,000 distinct names

# Label-map values. The mask is every person label (the consecutive values 1..5);
# the mannequin has its own value.
_SKIN, _HAIR, _SHIRT, _TROUSERS, _SHOES = 1, 2, 3, 4, 5
_PERSON_LABELS = (_SKIN, _HAIR, _SHIRT, _TROUSERS, _SHOES)
_MANNEQUIN = 6

_DISTRACTOR_RATE = 0.3  # a few candidates find no free spot beside the person and are dropped

# Base colours (RGB) that the samplers jitter.
_SKIN_LIGHT, _SKIN_DARK = (236, 200, 172), (92, 60, 44)
_HAIR_COLOURS = ((28, 22, 20), (70, 45, 30), (120, 80, 45), (195, 165, 105), (150, 150, 150), (140, 60, 30))
_NEUTRAL_CLOTHES = (  # black, grey, light grey, white, navy, denim, khaki
    (25, 25, 28), (60, 62, 68), (130, 130, 135), (225, 225, 220), (35, 45, 85), (70, 95, 140), (170, 150, 110)
)
_SHOE_COLOURS = ((25, 25, 25), (235, 235, 235), (90, 60, 40), (60, 60, 70))
_MANNEQUIN_COLOURS = ((222, 200, 172), (236, 234, 228), (152, 154, 158), (196, 196, 200), (205, 180, 150))


@dataclass(frozen=True)
class _Style:
    """Pose ranges (radians): limb angles are measured from straight down, positive outwards."""

    arm: tuple[float, float]  # upper arm
    elbow: tuple[float, float]  # forearm relative to upper arm (positive: further up/out)
    thigh: tuple[float, float]
    knee: tuple[float, float]  # shin bends back towards the vertical by this much
    crouch: float  # probability of a squat (thighs near horizontal)
    tilt: float  # std of the torso's lean


# Each category leans towards its own kind of pose, so per-category scores can differ.
_STYLES = {
    "HipHop": _Style(arm=(-0.3, 2.6), elbow=(-0.6, 2.2), thigh=(0.0, 0.9), knee=(0.0, 1.4), crouch=0.35, tilt=0.15),
    "Jazz": _Style(arm=(0.4, 3.0), elbow=(-0.3, 1.0), thigh=(-0.2, 1.3), knee=(0.0, 0.8), crouch=0.1, tilt=0.2),
    "Kata": _Style(arm=(0.8, 1.9), elbow=(-0.4, 1.8), thigh=(0.3, 0.9), knee=(0.2, 1.0), crouch=0.3, tilt=0.08),
    "Sports": _Style(arm=(-0.2, 3.0), elbow=(-0.6, 1.5), thigh=(-0.3, 1.4), knee=(0.0, 1.8), crouch=0.2, tilt=0.35),
    "Taichi": _Style(arm=(0.3, 1.6), elbow=(0.2, 1.4), thigh=(0.05, 0.5), knee=(0.1, 0.7), crouch=0.2, tilt=0.06),
}
# A mannequin stands stiffly: arms hang, legs straight, torso upright.
_MANNEQUIN_STYLE = _Style(arm=(0.05, 0.5), elbow=(0.0, 0.4), thigh=(0.0, 0.15), knee=(0.0, 0.1), crouch=0.0, tilt=0.02)


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


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Part:
    """One drawing primitive of a figure. Coordinates are in body units (a standing
    figure is about 1 tall) until `_placed` maps them to pixels."""

    kind: str  # "line" (thick, round caps), "poly" (filled), "circle", "cap" (upper half-disc)
    label: int
    points: np.ndarray  # (k, 2) x, y
    size: float = 0.0  # line thickness or radius
    angle: float = 0.0  # orientation of a "cap", degrees


def _direction(angle: float, side: int) -> np.ndarray:
    """Unit vector `angle` radians away from straight down, turned outwards on `side` (-1 left, +1 right)."""
    return np.array([side * math.sin(angle), math.cos(angle)])


def _dress(rng: np.random.Generator) -> dict[str, int | None]:
    """Which label each body part gets on a person: sleeves, shorts and hair vary."""
    long_sleeves = rng.random() < 0.5
    shorts = rng.random() < 0.25
    hair = rng.random() < 0.9
    return {
        "skin": _SKIN,
        "torso": _SHIRT,
        "upper_arm": _SHIRT,
        "forearm": _SHIRT if long_sleeves else _SKIN,
        "pelvis": _TROUSERS,
        "thigh": _TROUSERS,
        "shin": _SKIN if shorts else _TROUSERS,
        "foot": _SHOES,
        "hair": _HAIR if hair else None,
        "long_hair": _HAIR if hair and rng.random() < 0.3 else None,
    }


_MANNEQUIN_DRESS = {
    **{part: _MANNEQUIN for part in ("skin", "torso", "upper_arm", "forearm", "pelvis", "thigh", "shin", "foot")},
    "hair": None,
    "long_hair": None,
}


def _body(rng: np.random.Generator, style: _Style, dress: dict[str, int | None]) -> list[_Part]:
    """A posed figure in body units, pelvis at the origin, parts in drawing order (back to front)."""

    def length(x: float) -> float:  # individual proportions
        return x * rng.uniform(0.93, 1.07)

    build = rng.uniform(0.8, 1.25)  # slim .. broad: limb and torso thickness
    facing = rng.uniform(0.5, 1.0)  # < 1: turned away from the camera, so narrower shoulders and hips
    baggy = rng.uniform(1.0, 1.35) if dress["thigh"] != _MANNEQUIN else 1.0
    tilt = rng.normal(0.0, style.tilt)
    up = np.array([math.sin(tilt), -math.cos(tilt)])
    right = np.array([math.cos(tilt), math.sin(tilt)])

    neck = up * length(0.30)
    waist = up * rng.uniform(0.04, 0.12)
    nod = tilt + rng.normal(0.0, 0.15)
    head_r = length(0.065)
    head = neck + np.array([math.sin(nod), -math.cos(nod)]) * (length(0.035) + head_r)
    shoulder_w, hip_w = 0.115 * facing * build, 0.08 * facing * build
    thigh_t, shin_t = 0.095 * build * baggy, 0.075 * build * (baggy if dress["shin"] != _SKIN else 1.0)
    upper_t, fore_t = 0.062 * build, 0.05 * build

    legs, arms = [], []
    crouch = rng.random() < style.crouch
    for side in (-1, 1):
        hip = right * side * hip_w
        if crouch:  # thighs out to the side, shins back to vertical
            thigh_a, shin_a = rng.uniform(0.9, 1.5), rng.uniform(-0.3, 0.2)
        else:
            thigh_a = rng.uniform(*style.thigh)
            shin_a = thigh_a - rng.uniform(*style.knee)
        knee = hip + _direction(thigh_a, side) * length(0.245)
        ankle = knee + _direction(shin_a, side) * length(0.235)
        toe = ankle + np.array([side * 0.07, 0.015])
        legs += [
            _Part("line", dress["thigh"], np.array([hip, knee]), thigh_t),
            _Part("line", dress["shin"], np.array([knee, ankle]), shin_t),
            _Part("line", dress["foot"], np.array([ankle, toe]), 0.04 * build),
        ]

        shoulder = neck + right * side * shoulder_w - up * 0.035
        upper_a = rng.uniform(*style.arm)
        fore_a = upper_a + rng.uniform(*style.elbow)
        elbow = shoulder + _direction(upper_a, side) * length(0.17)
        wrist = elbow + _direction(fore_a, side) * length(0.15)
        hand = wrist + _direction(fore_a, side) * 0.03
        arms += [
            _Part("line", dress["upper_arm"], np.array([shoulder, elbow]), upper_t),
            _Part("line", dress["forearm"], np.array([elbow, wrist]), fore_t),
            _Part("circle", dress["skin"], hand[None], 0.032 * build),
        ]

    torso_top = shoulder_w + upper_t / 2
    waist_w = hip_w + thigh_t * 0.45
    crotch = right * (hip_w + thigh_t / 2)
    pelvis = np.array([waist - right * waist_w, waist + right * waist_w, crotch - up * 0.04, -crotch - up * 0.04])
    torso = np.array(
        [neck - right * torso_top, neck + right * torso_top, waist + right * waist_w, waist - right * waist_w]
    )
    parts = legs + [_Part("poly", dress["pelvis"], pelvis), _Part("poly", dress["torso"], torso)]
    if dress["long_hair"] is not None:  # behind the neck, down to the shoulders
        parts.append(_Part("line", dress["long_hair"], np.array([head, neck - up * 0.06]), head_r * 1.9))
    parts += [
        _Part("line", dress["skin"], np.array([neck, head]), 0.05 * build),
        _Part("circle", dress["skin"], head[None], head_r),
    ]
    if dress["hair"] is not None:
        parts.append(_Part("cap", dress["hair"], (head - up * 0.008)[None], head_r * 1.1, math.degrees(nod)))
    if rng.random() < 0.5:  # which arm is in front
        arms = arms[3:] + arms[:3]
    return parts + arms


def _extent(parts: list[_Part]) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of the parts, line thickness and radii included."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for part in parts:
        pad = part.size / 2 if part.kind == "line" else part.size if part.kind != "poly" else 0.0
        lo = np.minimum(lo, part.points.min(0) - pad)
        hi = np.maximum(hi, part.points.max(0) + pad)
    return np.concatenate([lo, hi])


def _placed(parts: list[_Part], scale: float, offset: np.ndarray) -> list[_Part]:
    """The parts in pixels: scaled by `scale`, then shifted by `offset`."""
    return [_Part(p.kind, p.label, p.points * scale + offset, p.size * scale, p.angle) for p in parts]


def _draw(canvas: np.ndarray, parts: list[_Part], value: int | None = None) -> None:
    """Paint the parts' labels (or `value`) into a uint8 label map, without anti-aliasing."""
    for part in parts:
        colour = part.label if value is None else value
        pts = np.round(part.points).astype(np.int32)
        size = max(1, round(part.size))
        if part.kind == "line":
            cv2.line(canvas, tuple(map(int, pts[0])), tuple(map(int, pts[1])), colour, size, cv2.LINE_8)
        elif part.kind == "poly":
            cv2.fillPoly(canvas, [pts], colour, cv2.LINE_8)
        elif part.kind == "circle":
            cv2.circle(canvas, tuple(map(int, pts[0])), size, colour, -1, cv2.LINE_8)
        else:  # "cap": the half-disc from 180 to 360 degrees is the top of the head
            centre = tuple(map(int, pts[0]))
            cv2.ellipse(canvas, centre, (size, size), part.angle, 180, 360, colour, -1, cv2.LINE_8)


@dataclass(frozen=True)
class _Layout:
    """Where things are: the horizon row and both figures in pixels (mannequin may be None)."""

    horizon: int
    person: list[_Part]
    person_box: np.ndarray  # x0, y0, x1, y1
    mannequin: list[_Part] | None
    mannequin_box: np.ndarray | None


def _layout(rng: np.random.Generator, category: str) -> _Layout:
    """Pose and place the person, then maybe a mannequin beside and behind them."""
    horizon = int(rng.uniform(0.3, 0.65) * HEIGHT)

    body = _body(rng, _STYLES[category], _dress(rng))
    scale = rng.uniform(0.45, 0.9) * HEIGHT  # standing height in pixels; crouching makes the box smaller
    x0, y0, x1, y1 = _extent(body) * scale
    width, height = x1 - x0, y1 - y0
    cut = rng.random() < 0.2  # sometimes the frame cuts the figure
    bottom_lo = horizon + 0.2 * (HEIGHT - horizon)  # feet on the floor, below the horizon
    bottom_hi = HEIGHT - 2 + (0.25 * height if cut else 0.0)
    bottom = rng.uniform(min(max(bottom_lo, height), bottom_hi), bottom_hi)
    margin = 0.3 * width if cut else 0.0
    left = rng.uniform(-margin, max(-margin, WIDTH - width + margin))
    person = _placed(body, scale, np.array([left - x0, bottom - y1]))
    person_box = _extent(person)

    if rng.random() >= _DISTRACTOR_RATE:
        return _Layout(horizon, person, person_box, None, None)
    body = _body(rng, _MANNEQUIN_STYLE, _MANNEQUIN_DRESS)
    m_scale = scale * rng.uniform(0.5, 0.95)  # usually further back, so smaller
    mx0, my0, mx1, my1 = _extent(body) * m_scale
    m_width = mx1 - mx0
    # Left edges that keep at most a quarter of the mannequin behind the person's box
    # and at least 80 % of it inside the frame.
    free = [
        (-0.2 * m_width, person_box[0] - 0.75 * m_width),  # left of the person
        (person_box[2] - 0.25 * m_width, WIDTH - 0.8 * m_width),  # right of the person
    ]
    free = [(lo, hi) for lo, hi in free if hi > lo]
    if not free:  # the person fills the width: no room for a mannequin
        return _Layout(horizon, person, person_box, None, None)
    lengths = np.array([hi - lo for lo, hi in free])
    lo, hi = free[rng.choice(len(free), p=lengths / lengths.sum())]
    m_left = rng.uniform(lo, hi)
    m_floor = horizon + 0.1 * (HEIGHT - horizon)  # standing on the floor, no nearer than the person
    m_bottom = rng.uniform(m_floor, max(min(person_box[3], HEIGHT), m_floor + 1))
    mannequin = _placed(body, m_scale, np.array([m_left - mx0, m_bottom - my1]))
    return _Layout(horizon, person, person_box, mannequin, _extent(mannequin))


# ----------------------------------------------------------------------------- colours and textures


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _jitter(rng: np.random.Generator, colour, amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def _rgb(colour) -> tuple[float, ...]:
    """A colour as the plain tuple cv2's drawing functions take."""
    return tuple(float(c) for c in colour)


def _pick(rng: np.random.Generator, colours) -> np.ndarray:
    return np.asarray(colours[rng.integers(len(colours))], np.float32)


def _cloth_colour(rng: np.random.Generator) -> np.ndarray:
    """Everyday garments: often black/grey/navy/denim/khaki/white, otherwise any hue."""
    if rng.random() < 0.45:
        return _jitter(rng, _pick(rng, _NEUTRAL_CLOTHES), 18)
    return _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95))


def _mottle(rng: np.random.Generator, shape: tuple[int, int], cells: int, amount: float) -> np.ndarray:
    """Smooth random brightness factor around 1 (cubic-upsampled coarse noise), shape (h, w)."""
    coarse = rng.uniform(1 - amount, 1 + amount, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _mottle_at(rng: np.random.Generator, shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray,
               cells: int, amount: float) -> np.ndarray:
    """`_mottle` of a (h, w) crop read at pixels (ys, xs); made at half resolution, as it is smooth anyway."""
    return _mottle(rng, (shape[0] // 2 + 1, shape[1] // 2 + 1), cells, amount)[ys // 2, xs // 2]


def _garment(rng: np.random.Generator, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
             shape: tuple[int, int]) -> np.ndarray:
    """Colours (k, 3) of a garment at pixels (ys, xs) of a (h, w) crop: plain, striped, checked or mottled."""
    kind = rng.choice(4, p=[0.35, 0.3, 0.15, 0.2])
    if kind == 0:
        return np.broadcast_to(base, (len(ys), 3))
    if kind == 3:
        return base * _mottle_at(rng, shape, ys, xs, int(rng.integers(3, 8)), rng.uniform(0.15, 0.35))[:, None]
    second = _cloth_colour(rng) if rng.random() < 0.5 else base * rng.uniform(0.4, 0.8)

    def stripes(angle: float) -> np.ndarray:
        period, duty = rng.uniform(5, 22), rng.uniform(0.25, 0.6)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        return (phase - np.floor(phase) < duty).astype(np.float32)

    angle = rng.uniform(0, math.pi)
    mix = stripes(angle) if kind == 1 else 0.5 * (stripes(angle) + stripes(angle + math.pi / 2))
    return base + (second - base) * mix[:, None]


def _is_person(labels: np.ndarray) -> np.ndarray:
    """Where a label map shows the person: the mask."""
    return (labels >= _SKIN) & (labels <= _SHOES)


def _crop(box: np.ndarray) -> tuple[slice, slice] | None:
    """Slices of the image covered by a pixel box (plus a margin), or None if it is off-frame."""
    x0, y0 = max(0, int(box[0]) - 2), max(0, int(box[1]) - 2)
    x1, y1 = min(WIDTH, int(box[2]) + 3), min(HEIGHT, int(box[3]) + 3)
    if x1 <= x0 or y1 <= y0:
        return None
    return slice(y0, y1), slice(x0, x1)


def _roundness(silhouette: np.ndarray, sigma: float) -> np.ndarray:
    """Blurred silhouette: about 1 deep inside the figure, 0.5 on its outline. Shading from
    it darkens every limb towards its edges, which makes it look round."""
    return cv2.GaussianBlur(silhouette.astype(np.float32), (0, 0), sigma)


def _paint_person(rng, image, labels, box, colours) -> None:
    """Fill the person's labels in `image` with textured, shaded colours."""
    crop = _crop(box)
    if crop is None:
        return
    lab = labels[crop]
    silhouette = _is_person(lab)
    ys, xs = np.nonzero(silhouette)  # only the person's pixels are coloured: cheaper than whole fields
    which = lab[ys, xs]
    pixels = np.empty((len(ys), 3), np.float32)
    for label in _PERSON_LABELS:
        on = which == label
        y, x = ys[on], xs[on]
        if label == _SKIN:
            pixels[on] = colours["skin"] * _mottle_at(rng, lab.shape, y, x, 4, 0.06)[:, None]
        elif label == _HAIR:
            pixels[on] = colours["hair"] * _mottle_at(rng, lab.shape, y, x, 12, 0.2)[:, None]
        elif label == _SHOES:
            pixels[on] = colours["shoes"]
        else:
            pixels[on] = _garment(rng, colours["shirt" if label == _SHIRT else "trousers"], y, x, lab.shape)
    round_ = _roundness(silhouette, max(1.0, 0.02 * (box[3] - box[1])))[ys, xs]
    side_light = 1 + rng.uniform(-0.15, 0.15) * (2 * xs / max(1, lab.shape[1] - 1) - 1)  # light from one side
    shading = (0.6 + 0.4 * np.clip(2 * round_ - 0.3, 0, 1)) * side_light
    image[crop][ys, xs] = pixels * shading[:, None]


def _paint_mannequin(rng, image, labels, box) -> None:
    """Uniform plastic: strong rounded shading and a glossy highlight along each limb."""
    crop = _crop(box)
    if crop is None:
        return
    silhouette = labels[crop] == _MANNEQUIN
    ys, xs = np.nonzero(silhouette)
    round_ = _roundness(silhouette, max(1.0, 0.015 * (box[3] - box[1])))[ys, xs, None]
    base = _jitter(rng, _pick(rng, _MANNEQUIN_COLOURS), 12)
    gloss = np.clip((round_ - 0.8) / 0.2, 0, 1) ** 2 * rng.uniform(20, 60)
    image[crop][ys, xs] = base * (0.5 + 0.5 * np.clip(1.8 * round_ - 0.2, 0, 1)) + gloss


# ----------------------------------------------------------------------------- the room


def _floor(rng: np.random.Generator, image: np.ndarray, horizon: int) -> None:
    """Wood planks, tiles in perspective, or plain carpet below the horizon."""
    kind = rng.choice(3)
    depth = HEIGHT - horizon
    if kind == 0:
        colour = _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.35, 0.7), rng.uniform(0.3, 0.75))
    elif kind == 1:
        colour = _jitter(rng, _pick(rng, ((200, 200, 195), (170, 160, 140), (120, 120, 125))), 15)
    else:
        colour = _muted_colour(rng)
    cv2.rectangle(image, (0, horizon), (WIDTH, HEIGHT), _rgb(colour), -1)
    if kind == 2:
        return
    line = _rgb(colour * rng.uniform(0.55, 0.8))
    rows = int(rng.integers(6, 14))
    edges = [horizon + int(depth * (k / rows) ** 1.7) for k in range(rows + 1)]  # wider towards the camera
    for top, bottom in zip(edges, edges[1:]):
        if kind == 0:  # planks differ a little in shade
            cv2.rectangle(image, (0, top), (WIDTH, bottom), _rgb(colour * rng.uniform(0.9, 1.1)), -1)
        cv2.line(image, (0, top), (WIDTH, top), line, 1, cv2.LINE_AA)
    if kind == 1:  # tile seams converge on a vanishing point on the horizon
        vanish = rng.uniform(0.2, 0.8) * WIDTH
        for x in np.arange(-2 * WIDTH, 3 * WIDTH, rng.uniform(50, 110)):
            cv2.line(image, (int(vanish), horizon), (int(x), HEIGHT), line, 1, cv2.LINE_AA)


def _clutter(rng: np.random.Generator, image: np.ndarray, horizon: int, palette: list[np.ndarray]) -> None:
    """Doors, frames, windows, furniture, lamps, balls and limb-like sticks. About a third
    take a person's colour (shirt, trousers, skin), so colour alone does not find the person."""

    def colour() -> tuple[float, ...]:
        base = _jitter(rng, _pick(rng, palette), 20) if rng.random() < 0.35 else _muted_colour(rng)
        return _rgb(base)

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
            inner = _rgb(_hsv(0.58, 0.15, 0.97)) if kind == "window" else colour()
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
            b = a + _direction(rng.uniform(0, 2 * math.pi), 1) * rng.uniform(30, 120)
            cv2.line(image, tuple(map(int, a)), tuple(map(int, b)), c, int(rng.integers(4, 20)), cv2.LINE_AA)


def _shadow(image: np.ndarray, box: np.ndarray | None, strength: float) -> None:
    """A soft dark ellipse on the floor under a figure's feet."""
    if box is None:
        return
    axes = (max(1, int(0.45 * (box[2] - box[0]))), max(1, int(0.05 * (box[3] - box[1]))))
    sigma = max(1.0, axes[1] / 2)
    reach = np.array(axes) + 3 * sigma  # the blur spreads the ellipse this far
    centre = np.array([(box[0] + box[2]) / 2, box[3]])
    crop = _crop(np.concatenate([centre - reach, centre + reach]))
    if crop is None:
        return
    shade = np.zeros(image[crop].shape[:2], np.float32)
    local = (int(centre[0]) - crop[1].start, int(centre[1]) - crop[0].start)
    cv2.ellipse(shade, local, axes, 0, 0, 360, strength, -1)
    image[crop] *= 1 - cv2.GaussianBlur(shade, (0, 0), sigma)[..., None]


def _room(rng: np.random.Generator, layout: _Layout, palette: list[np.ndarray]) -> np.ndarray:
    """The background, float32 (H, W, 3) RGB: wall, floor, skirting board, clutter, shadows."""
    image = np.empty((HEIGHT, WIDTH, 3), np.float32)
    wall = _muted_colour(rng)
    cv2.rectangle(image, (0, 0), (WIDTH, layout.horizon), _rgb(wall), -1)  # faster than numpy broadcasting
    if rng.random() < 0.25:  # wallpaper stripes
        period = rng.uniform(12, 40)
        for x in np.arange(0, WIDTH, period):
            image[: layout.horizon, int(x):int(x + period / 2)] *= 0.93
    _floor(rng, image, layout.horizon)
    skirting = _rgb(_muted_colour(rng) if rng.random() < 0.5 else wall * 0.7)
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
    blotches = _mottle(rng, gradient.shape, 6, 0.08)  # lamps, stains
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
    layout = _layout(rng, category)

    colours = {
        "skin": _jitter(rng, np.array(_SKIN_LIGHT) + rng.random() * (np.array(_SKIN_DARK) - _SKIN_LIGHT), 12),
        "hair": _jitter(rng, _pick(rng, _HAIR_COLOURS), 10),
        "shirt": _cloth_colour(rng),
        "shoes": _jitter(rng, _pick(rng, _SHOE_COLOURS), 10),
    }
    for _ in range(10):  # trousers in another colour than the shirt
        colours["trousers"] = _cloth_colour(rng)
        if np.abs(colours["trousers"] - colours["shirt"]).sum() > 90:
            break
    image = _room(rng, layout, [colours["shirt"], colours["trousers"], colours["skin"]])

    # The mannequin first, so the person (closer to the camera) covers it where they overlap.
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    if layout.mannequin is not None:
        _draw(labels, layout.mannequin)
        _paint_mannequin(rng, image, labels, layout.mannequin_box)
    _draw(labels, layout.person)
    _paint_person(rng, image, labels, layout.person_box, colours)

    mask = np.where(_is_person(labels), np.uint8(255), np.uint8(0))
    return _camera(rng, image), mask, layout.mannequin is not None


def render_distractor_mask(index: int, seed: int = 0) -> np.ndarray | None:
    """The mannequin's whole silhouette in sample `index` (uint8, {0, 255}), including any part
    hidden behind the person, or None when the sample has no mannequin. For checking that
    the distractor stays out of the mask."""
    category = _name_parts(index, seed)[0]
    layout = _layout(np.random.default_rng((seed, index)), category)
    if layout.mannequin is None:
        return None
    silhouette = np.zeros((HEIGHT, WIDTH), np.uint8)
    _draw(silhouette, layout.mannequin, 255)
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

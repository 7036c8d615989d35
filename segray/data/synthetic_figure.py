"""The figures of the synthetic MADS-like set (segray.data.synthetic): a dressed person and
a plastic mannequin, posed, placed in the frame, drawn into a label map and painted.

Label values, pose styles and colour palettes; the figure geometry (body parts in body
units, then pixels); the colour and texture helpers the room in segray.data.synthetic
also uses. Everything here draws from the generator it is handed and nothing else.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

WIDTH, HEIGHT = 512, 384

# Label-map values. The mask is every person label (the consecutive values 1..5);
# the mannequin has its own value.
_SKIN, _HAIR, _SHIRT, _TROUSERS, _SHOES = 1, 2, 3, 4, 5
_PERSON_LABELS = (_SKIN, _HAIR, _SHIRT, _TROUSERS, _SHOES)
_MANNEQUIN = 6

_DISTRACTOR_RATE = 0.3  # a few candidates find no free spot beside the person and are dropped

# Base colours (RGB) that the samplers jitter.
SKIN_LIGHT, SKIN_DARK = (236, 200, 172), (92, 60, 44)
HAIR_COLOURS = ((28, 22, 20), (70, 45, 30), (120, 80, 45), (195, 165, 105), (150, 150, 150), (140, 60, 30))
_NEUTRAL_CLOTHES = (  # black, grey, light grey, white, navy, denim, khaki
    (25, 25, 28), (60, 62, 68), (130, 130, 135), (225, 225, 220), (35, 45, 85), (70, 95, 140), (170, 150, 110)
)
SHOE_COLOURS = ((25, 25, 25), (235, 235, 235), (90, 60, 40), (60, 60, 70))
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


def direction(angle: float, side: int) -> np.ndarray:
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
        knee = hip + direction(thigh_a, side) * length(0.245)
        ankle = knee + direction(shin_a, side) * length(0.235)
        toe = ankle + np.array([side * 0.07, 0.015])
        legs += [
            _Part("line", dress["thigh"], np.array([hip, knee]), thigh_t),
            _Part("line", dress["shin"], np.array([knee, ankle]), shin_t),
            _Part("line", dress["foot"], np.array([ankle, toe]), 0.04 * build),
        ]

        shoulder = neck + right * side * shoulder_w - up * 0.035
        upper_a = rng.uniform(*style.arm)
        fore_a = upper_a + rng.uniform(*style.elbow)
        elbow = shoulder + direction(upper_a, side) * length(0.17)
        wrist = elbow + direction(fore_a, side) * length(0.15)
        hand = wrist + direction(fore_a, side) * 0.03
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


def draw(canvas: np.ndarray, parts: list[_Part], value: int | None = None) -> None:
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
class Layout:
    """Where things are: the horizon row and both figures in pixels (mannequin may be None)."""

    horizon: int
    person: list[_Part]
    person_box: np.ndarray  # x0, y0, x1, y1
    mannequin: list[_Part] | None
    mannequin_box: np.ndarray | None


def place_figures(rng: np.random.Generator, category: str) -> Layout:
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
        return Layout(horizon, person, person_box, None, None)
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
        return Layout(horizon, person, person_box, None, None)
    lengths = np.array([hi - lo for lo, hi in free])
    lo, hi = free[rng.choice(len(free), p=lengths / lengths.sum())]
    m_left = rng.uniform(lo, hi)
    m_floor = horizon + 0.1 * (HEIGHT - horizon)  # standing on the floor, no nearer than the person
    m_bottom = rng.uniform(m_floor, max(min(person_box[3], HEIGHT), m_floor + 1))
    mannequin = _placed(body, m_scale, np.array([m_left - mx0, m_bottom - my1]))
    return Layout(horizon, person, person_box, mannequin, _extent(mannequin))


# ----------------------------------------------------------------------------- colours and textures


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def jitter(rng: np.random.Generator, colour, amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255).astype(np.float32)


def rgb(colour) -> tuple[float, ...]:
    """A colour as the plain tuple cv2's drawing functions take."""
    return tuple(float(c) for c in colour)


def pick(rng: np.random.Generator, colours) -> np.ndarray:
    return np.asarray(colours[rng.integers(len(colours))], np.float32)


def cloth_colour(rng: np.random.Generator) -> np.ndarray:
    """Everyday garments: often black/grey/navy/denim/khaki/white, otherwise any hue."""
    if rng.random() < 0.45:
        return jitter(rng, pick(rng, _NEUTRAL_CLOTHES), 18)
    return hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95))


def muted_colour(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95))


def mottle(rng: np.random.Generator, shape: tuple[int, int], cells: int, amount: float) -> np.ndarray:
    """Smooth random brightness factor around 1 (cubic-upsampled coarse noise), shape (h, w)."""
    coarse = rng.uniform(1 - amount, 1 + amount, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _mottle_at(rng: np.random.Generator, shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray,
               cells: int, amount: float) -> np.ndarray:
    """`mottle` of a (h, w) crop read at pixels (ys, xs); made at half resolution, as it is smooth anyway."""
    return mottle(rng, (shape[0] // 2 + 1, shape[1] // 2 + 1), cells, amount)[ys // 2, xs // 2]


def _garment(rng: np.random.Generator, base: np.ndarray, ys: np.ndarray, xs: np.ndarray,
             shape: tuple[int, int]) -> np.ndarray:
    """Colours (k, 3) of a garment at pixels (ys, xs) of a (h, w) crop: plain, striped, checked or mottled."""
    kind = rng.choice(4, p=[0.35, 0.3, 0.15, 0.2])
    if kind == 0:
        return np.broadcast_to(base, (len(ys), 3))
    if kind == 3:
        return base * _mottle_at(rng, shape, ys, xs, int(rng.integers(3, 8)), rng.uniform(0.15, 0.35))[:, None]
    second = cloth_colour(rng) if rng.random() < 0.5 else base * rng.uniform(0.4, 0.8)

    def stripes(angle: float) -> np.ndarray:
        period, duty = rng.uniform(5, 22), rng.uniform(0.25, 0.6)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / period
        return (phase - np.floor(phase) < duty).astype(np.float32)

    angle = rng.uniform(0, math.pi)
    mix = stripes(angle) if kind == 1 else 0.5 * (stripes(angle) + stripes(angle + math.pi / 2))
    return base + (second - base) * mix[:, None]


def is_person(labels: np.ndarray) -> np.ndarray:
    """Where a label map shows the person: the mask."""
    return (labels >= _SKIN) & (labels <= _SHOES)


def crop_slices(box: np.ndarray) -> tuple[slice, slice] | None:
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


def paint_person(rng, image, labels, box, colours) -> None:
    """Fill the person's labels in `image` with textured, shaded colours."""
    crop = crop_slices(box)
    if crop is None:
        return
    lab = labels[crop]
    silhouette = is_person(lab)
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


def paint_mannequin(rng, image, labels, box) -> None:
    """Uniform plastic: strong rounded shading and a glossy highlight along each limb."""
    crop = crop_slices(box)
    if crop is None:
        return
    silhouette = labels[crop] == _MANNEQUIN
    ys, xs = np.nonzero(silhouette)
    round_ = _roundness(silhouette, max(1.0, 0.015 * (box[3] - box[1])))[ys, xs, None]
    base = jitter(rng, pick(rng, _MANNEQUIN_COLOURS), 12)
    gloss = np.clip((round_ - 0.8) / 0.2, 0, 1) ** 2 * rng.uniform(20, 60)
    image[crop][ys, xs] = base * (0.5 + 0.5 * np.clip(1.8 * round_ - 0.2, 0, 1)) + gloss

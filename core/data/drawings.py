"""Synthetic digits "drawn as a person would" on a canvas, to measure how well models read real drawings.

`draw_digit(7, numpy.random.default_rng(0))` gives one RGBA canvas like streamlit-drawable-canvas's;
`drawing_set(n_per_digit, seed)` gives a reproducible labelled set (feed it through core.data.preprocess);
`reading_report(labels, guesses)` sums up how a model read a set (per digit, commonest misreads);
`class_drawing_set(n, seed)` draws digits in one made-up class's house style (centred, leaning hard right).

Each digit has several stroke templates (a 1 with and without flag and foot, an open and a closed 4,
...) in a unit box (x right, y down, height 1). A drawing picks one, resamples its strokes to a random
number of points, adds hand tremor, slants, stretches and rotates it, scales it to 20–90% of the
canvas, puts it off-centre and renders it with a round brush 8–30 px wide (at 280 px) in one colour.

Templates are too kind (every 7 is one of three 7s), so real handwriting is re-drawn too: see
core.data.restroke, which shares this module's pen, placement and colour.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

Stroke = np.ndarray  # (k, 2) points, x right and y down, in the template's unit box
Template = Callable[[], list[Stroke]]


def _pts(*xy: tuple[float, float]) -> Stroke:
    return np.array(xy, dtype=np.float64)


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """Points on an ellipse from `start` to `end` degrees (0 = right, 90 = up; end < start is clockwise)."""
    t = np.radians(np.linspace(start, end, max(8, int(abs(end - start) / 6))))
    return np.stack([cx + rx * np.cos(t), cy - ry * np.sin(t)], axis=1)


def _curve(*xy: tuple[float, float]) -> Stroke:
    """A smooth Catmull-Rom curve through the given points."""
    p = _pts(*xy)
    p = np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0, 1, 12, endpoint=False)[:, None]
    segments = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        segments.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                               + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    return np.vstack(segments + [p[-2:-1]])


def _join(*parts: Stroke) -> Stroke:
    """One stroke made of consecutive pieces (the pen does not lift)."""
    return np.vstack(parts)


# Stroke templates per digit. Each is a function so that every call returns fresh arrays.
TEMPLATES: dict[int, list[Template]] = {
    0: [
        lambda: [_arc(0.32, 0.5, 0.3, 0.5, 100, 100 + 372)],  # counter-clockwise from the top, overlapping
        lambda: [_arc(0.32, 0.5, 0.25, 0.5, 80, 80 - 365)],   # clockwise, narrow
        lambda: [_curve((0.45, 0.02), (0.15, 0.2), (0.05, 0.62), (0.25, 0.98), (0.52, 0.8),
                        (0.56, 0.32), (0.42, 0.02), (0.3, 0.06))],  # egg, drawn fast
    ],
    1: [
        lambda: [_pts((0.5, 0.0), (0.45, 1.0))],
        lambda: [_pts((0.22, 0.22), (0.5, 0.0), (0.5, 1.0))],  # with a flag
        lambda: [_pts((0.22, 0.22), (0.5, 0.0), (0.5, 1.0)), _pts((0.2, 1.0), (0.8, 1.0))],  # and a foot
    ],
    2: [
        lambda: [_join(_curve((0.06, 0.28), (0.28, 0.02), (0.55, 0.06), (0.64, 0.3), (0.45, 0.58),
                              (0.05, 0.98)), _pts((0.72, 0.98)))],
        lambda: [_join(_curve((0.06, 0.25), (0.3, 0.02), (0.58, 0.1), (0.58, 0.36), (0.3, 0.7),
                              (0.1, 0.9), (0.16, 0.98), (0.3, 0.9), (0.2, 0.84), (0.12, 0.95),
                              (0.4, 0.99), (0.75, 0.95)))],  # with a loop at the foot
        lambda: [_curve((0.05, 0.2), (0.3, 0.0), (0.6, 0.15), (0.5, 0.5), (0.15, 0.85), (0.06, 1.0),
                        (0.38, 0.94), (0.72, 1.0))],  # rounded, no corner
    ],
    3: [
        lambda: [_join(_arc(0.32, 0.26, 0.27, 0.24, 155, -90), _arc(0.3, 0.74, 0.32, 0.26, 90, -155))],
        lambda: [_join(_pts((0.05, 0.02), (0.62, 0.02), (0.25, 0.42)),
                       _arc(0.3, 0.7, 0.32, 0.3, 95, -150))],  # flat top
        lambda: [_curve((0.05, 0.12), (0.35, 0.0), (0.6, 0.15), (0.5, 0.4), (0.22, 0.48),
                        (0.55, 0.58), (0.65, 0.8), (0.4, 1.0), (0.05, 0.88))],
    ],
    4: [
        lambda: [_pts((0.28, 0.0), (0.05, 0.62), (0.72, 0.62)), _pts((0.55, 0.05), (0.55, 1.0))],  # open
        lambda: [_pts((0.55, 0.0), (0.02, 0.65), (0.72, 0.65)), _pts((0.55, 0.0), (0.55, 1.0))],  # closed
        lambda: [_pts((0.25, 0.0), (0.08, 0.55), (0.75, 0.55)), _pts((0.52, 0.3), (0.48, 1.0))],  # short stem
    ],
    5: [
        lambda: [_pts((0.1, 0.02), (0.66, 0.02)),
                 _join(_pts((0.12, 0.02)), _curve((0.08, 0.45), (0.38, 0.38), (0.62, 0.6),
                                                  (0.55, 0.9), (0.3, 1.0), (0.04, 0.88)))],
        lambda: [_join(_pts((0.66, 0.02), (0.12, 0.02)),
                       _curve((0.09, 0.46), (0.35, 0.4), (0.6, 0.58), (0.58, 0.88), (0.32, 1.0),
                              (0.05, 0.9)))],  # one stroke, flag first
        lambda: [_join(_pts((0.2, 0.0), (0.1, 0.42)),
                       _arc(0.32, 0.68, 0.3, 0.3, 135, -150)), _pts((0.2, 0.0), (0.68, 0.0))],
    ],
    6: [
        lambda: [_curve((0.6, 0.02), (0.3, 0.2), (0.1, 0.55), (0.15, 0.9), (0.38, 1.0), (0.58, 0.8),
                        (0.48, 0.56), (0.25, 0.55), (0.12, 0.72))],
        lambda: [_curve((0.5, 0.0), (0.22, 0.4), (0.1, 0.75), (0.3, 1.0), (0.55, 0.86), (0.52, 0.62),
                        (0.28, 0.6), (0.13, 0.8))],
        lambda: [_join(_pts((0.55, 0.0), (0.12, 0.6)), _arc(0.33, 0.74, 0.25, 0.26, 180, 180 - 375))],
    ],
    7: [
        lambda: [_pts((0.05, 0.03), (0.7, 0.03), (0.3, 1.0))],
        lambda: [_pts((0.05, 0.03), (0.7, 0.03), (0.3, 1.0)), _pts((0.28, 0.52), (0.72, 0.5))],  # crossbar
        lambda: [_join(_pts((0.05, 0.16), (0.05, 0.02), (0.72, 0.02)),
                       _curve((0.72, 0.02), (0.52, 0.4), (0.4, 0.72), (0.36, 1.0)))],  # tick, curved stem
    ],
    8: [
        lambda: [_curve((0.56, 0.1), (0.32, 0.0), (0.08, 0.14), (0.15, 0.36), (0.5, 0.6), (0.6, 0.82),
                        (0.35, 1.0), (0.08, 0.86), (0.15, 0.6), (0.5, 0.36), (0.58, 0.14), (0.46, 0.03))],
        lambda: [_arc(0.33, 0.25, 0.22, 0.24, 90, 90 + 370), _arc(0.33, 0.73, 0.28, 0.27, 90, 90 - 370)],
        lambda: [_curve((0.5, 0.05), (0.25, 0.02), (0.12, 0.2), (0.3, 0.45), (0.58, 0.65), (0.5, 0.95),
                        (0.2, 0.96), (0.12, 0.7), (0.35, 0.48), (0.55, 0.25), (0.45, 0.04))],
    ],
    9: [
        lambda: [_join(_arc(0.3, 0.27, 0.27, 0.26, -10, 355), _pts((0.56, 0.27), (0.52, 1.0)))],
        lambda: [_join(_arc(0.3, 0.27, 0.27, 0.26, 0, 360),
                       _curve((0.57, 0.3), (0.56, 0.68), (0.42, 0.96), (0.15, 0.92)))],  # curved tail
        lambda: [_join(_arc(0.32, 0.26, 0.26, 0.25, 20, 20 - 360), _pts((0.57, 0.3), (0.45, 1.0)))],
    ],
}


def _resample(stroke: Stroke, rng: np.random.Generator) -> Stroke:
    """Evenly spaced points along the stroke, as many as a mouse at a random speed would report."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(seg)])
    length = along[-1]
    if length < 1e-9:
        return stroke[:1].copy()
    n = max(2, int(length * rng.uniform(12, 60)))
    at = np.linspace(0, length, n)
    return np.stack([np.interp(at, along, stroke[:, 0]), np.interp(at, along, stroke[:, 1])], axis=1)


def _tremor(stroke: Stroke, rng: np.random.Generator, amount: float) -> Stroke:
    """Slow drift (a few random knots, interpolated) plus tiny per-point jitter: a hand, not a plotter."""
    knots = rng.integers(3, 7)
    t = np.linspace(0, 1, len(stroke))
    drift = np.stack([np.interp(t, np.linspace(0, 1, knots), rng.normal(0, amount, knots)) for _ in range(2)], 1)
    return stroke + drift + rng.normal(0, amount * 0.15, stroke.shape)


def _pose(strokes: list[Stroke], rng: np.random.Generator) -> list[Stroke]:
    """Stretch, slant and rotate the whole digit about its middle."""
    aspect = rng.uniform(0.75, 1.3)
    slant = rng.uniform(-0.3, 0.3)  # x shift per unit of height (italic when > 0)
    angle = np.radians(rng.uniform(-15, 15))
    c, s = np.cos(angle), np.sin(angle)
    m = np.array([[c, -s], [s, c]]) @ np.array([[aspect, -slant], [0.0, 1.0]])
    return [(p - 0.5) @ m.T for p in strokes]


def draw_digit(digit: int, rng: np.random.Generator, size: int = 280, template: int | None = None) -> np.ndarray:
    """One hand-drawn-looking digit on a transparent RGBA uint8 canvas of (size, size, 4); `template`: that one of
    the digit's TEMPLATES (default: one at random)."""
    if digit not in TEMPLATES:
        raise ValueError(f"Digit must be an integer from 0 to 9, not {digit!r}.")
    if size < 28:
        raise ValueError(f"The canvas must be at least 28 px wide to draw on, not {size}.")
    if template is not None and not 0 <= template < len(TEMPLATES[digit]):
        raise ValueError(f"A {digit} has templates 0 to {len(TEMPLATES[digit]) - 1}, not {template!r}.")
    template = TEMPLATES[digit][rng.integers(len(TEMPLATES[digit])) if template is None else template]
    amount = rng.uniform(0.005, 0.025)  # tremor, in units of the digit's height
    strokes = _pose([_tremor(_resample(s, rng), rng, amount) for s in template()], rng)

    points = np.vstack(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = np.maximum(high - low, 1e-6)
    height = rng.uniform(0.2, 0.9) * size
    width = pen_width(rng, size, height)
    scale, origin = placement(extent, height, width, size, rng)
    colour = pen_colour(rng)

    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(canvas)
    r = width / 2
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - low) * scale + origin]
        if len(xy) > 1:
            pen.line(xy, fill=colour, width=max(1, round(width)), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps, as a canvas brush draws them
            pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return np.asarray(canvas).copy()


def pen_width(rng: np.random.Generator, size: int, height: float, low: float = 8, high: float = 30) -> float:
    """A round brush `low`–`high` px wide at 280 px, capped so a small digit does not become a blob."""
    # A brush far too fat for a small digit makes a blob no person would call a digit: cap it.
    return min(rng.uniform(low, high) * size / 280, 0.22 * height)


def placement(extent: np.ndarray, height: float, width: float, size: int,
               rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Scale and top-left origin that make the digit `height` px tall, off-centre, wholly on the canvas."""
    room = size - width - 4  # the whole stroke, with its round caps, stays on the canvas
    scale = min(height / extent[1], room / extent[0], room / extent[1])
    span = extent * scale
    origin = width / 2 + 2 + rng.uniform(0, 1, 2) * (room - span)  # off-centre, anywhere that fits
    return scale, origin


def pen_colour(rng: np.random.Generator) -> tuple[int, int, int, int]:
    """White-ish, black or any colour, fully opaque, like a canvas stroke."""
    kind = rng.integers(3)
    if kind == 0:
        rgb = rng.integers(225, 256, 3)
    elif kind == 1:
        rgb = np.zeros(3, dtype=int)
    else:
        rgb = rng.integers(0, 256, 3)
    return int(rgb[0]), int(rgb[1]), int(rgb[2]), 255


def drawing_set(n_per_digit: int = 100, seed: int = 0, size: int = 280) -> tuple[list[np.ndarray], np.ndarray]:
    """Reproducible canvases and int64 labels, digits interleaved 0..9, 0..9, ...

    Drawing i depends only on (seed, i), so a smaller set is a prefix of a larger one.
    Memory: 1,000 canvases of 280 px take 314 MB; preprocess and drop them in chunks for more.
    """
    if n_per_digit < 0:
        raise ValueError(f"n_per_digit must be 0 or more, not {n_per_digit}.")
    labels = np.tile(np.arange(10, dtype=np.int64), n_per_digit)
    canvases = [draw_digit(int(d), np.random.default_rng([seed, i]), size) for i, d in enumerate(labels)]
    return canvases, labels


def class_drawing(digit: int, rng: np.random.Generator, shear: float = 0.6, size: int = 280) -> np.ndarray:
    """A template drawing in one class's house style: every digit half the canvas tall, centred, leaning hard right
    (x shifts by `shear` per unit of height, beyond the ±0.3 slant of `draw_digit`). A stand-in for a group's writing."""
    canvas = Image.fromarray(draw_digit(digit, rng, size))
    box = canvas.getchannel("A").getbbox()
    ink = canvas.crop(box)
    fit = 0.5 * size / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * fit)), max(1, round(ink.height * fit))), Image.Resampling.LANCZOS)
    centred = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    centred.paste(ink, ((size - ink.width) // 2, (size - ink.height) // 2))
    # Output pixel (x, y) samples input (x + shear·(y − size/2), y): the top moves right, the bottom left.
    leaning = centred.transform((size, size), Image.Transform.AFFINE, (1, shear, -shear * size / 2, 0, 1, 0),
                                Image.Resampling.BILINEAR)
    return np.asarray(leaning).copy()


def class_drawing_set(n: int, seed: int = 0, shear: float = 0.6, size: int = 280) -> tuple[list[np.ndarray], np.ndarray]:
    """`n` reproducible canvases in one class's style (see `class_drawing`) and int64 labels, digits interleaved."""
    labels = np.arange(n, dtype=np.int64) % 10
    return [class_drawing(int(d), np.random.default_rng([seed, i]), shear, size) for i, d in enumerate(labels)], labels


def reading_report(labels: np.ndarray, guesses: np.ndarray, top: int = 8) -> dict[str, object]:
    """How well a model read a drawing set: accuracy, accuracy per digit, and the commonest misreads.

    Misreads are "true->read: count" strings, most frequent first (ties in digit order).
    """
    labels, guesses = np.asarray(labels), np.asarray(guesses)
    right = guesses == labels
    pairs, counts = np.unique(np.stack([labels[~right], guesses[~right]], 1).reshape(-1, 2), axis=0,
                              return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return {"images": int(len(labels)), "accuracy": float(right.mean()) if len(labels) else 0.0,
            "per_digit": {str(d): float(right[labels == d].mean()) for d in range(10) if (labels == d).any()},
            "misreads": [f"{a}->{b}: {c}" for (a, b), c in zip(pairs[order].tolist(), counts[order].tolist())]}

"""Digits typed in the machine's fonts: the printed and hand-lettered half of strangers' drawings.

`font_faces()` finds the fonts installed here (Debian's font packages, plus the DejaVu faces matplotlib
ships, so there are always some) that type ten distinct digits; `typed_digits(face)` renders a face's 0-9 as
MNIST-style 28×28 images (through core.data.preprocess, as a picture of them would be read);
`split_faces(faces)` puts each family on one side for good: families the starter may learn from, and
families kept out of training to measure it on (DejaVu and Liberation, the fonts most machines type with,
and their near copies are always kept out). Re-stroked with core.data.restroke, a typed digit becomes a
drawing in that font's shape: a 1 with a long flag, a crossed 7, a closed 4, an open 6, as people write them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from fontTools.ttLib import TTFont  # matplotlib's dependency, pinned in constraints.txt
from PIL import Image, ImageDraw, ImageFont

from core.data.datasets import unit
from core.data.preprocess import to_model_input
from core.data.restroke import MEASURE_PEN, restroked_inputs

FONT_ROOTS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf")
# Families whose digit code points hold pictures, keycaps or letters, not digits (found by looking at them).
NOT_DIGITS = ("D050000L", "Standard Symbols PS", "Linux Biolinum Keyboard O", "Linux Libertine Initials O",
              "DejaVu Math TeX Gyre", "OpenSymbol")
# Designs always kept out: the fonts most machines type digits in (DejaVu, Liberation) and the Helvetica, Times
# and Courier clones whose digits are near copies of Liberation's (URW's Nimbus, GNU FreeFont).
ALWAYS_HELD_OUT = ("deja", "liberation", "nimbus", "free")
# Families whose names hide another design's glyphs: the same designer's siblings, and fonts derived from another.
DESIGN_ALIASES = {"unifur": "eurofurence", "monofur": "eurofurence",  # one designer's family (digits 0.999 alike)
                  "carlito": "lato", "hack": "deja",  # Carlito is drawn from Lato, Hack from DejaVu Sans Mono
                  "arimo": "liberation", "tinos": "liberation", "cousine": "liberation"}  # Liberation's designs
HELD_OUT_SHARE = 3  # besides those, one design in three (by a hash of its name) is kept out of training
RENDER_PX = 112  # font size the glyphs are typed at before being brought to 28×28
MEASURE_REPEATS = 5  # the held-out measure re-strokes each typed digit this many times, with MEASURE_PEN
MEASURE_SEED = 0  # the held-out measure's seed


@dataclass(frozen=True)
class FontFace:
    family: str
    style: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}".strip()


def font_faces(roots: tuple[Path, ...] | None = None) -> list[FontFace]:
    """Every installed face (.ttf/.otf under `roots`, default FONT_ROOTS plus matplotlib's DejaVu) that types
    ten inked, distinct digits; one per (family, style), sorted by family then style."""
    if roots is None:
        files = [p for root in FONT_ROOTS for p in _font_files(root)] + _matplotlib_dejavu()
    else:
        files = [p for root in roots for p in _font_files(Path(root))]
    return list(_faces(tuple(files)))


def _font_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())


def _matplotlib_dejavu() -> list[Path]:
    """The DejaVu faces matplotlib ships (its other fonts are TeX's math and symbol sets)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for loc in spec.submodule_search_locations
                  for p in (Path(loc) / "mpl-data" / "fonts" / "ttf").glob("DejaVu*.ttf"))


@lru_cache(maxsize=4)
def _faces(files: tuple[Path, ...]) -> tuple[FontFace, ...]:
    found: dict[tuple[str, str], FontFace] = {}
    for path in files:
        try:
            family, style = _font(path, 32).getname()  # the size _types_digits renders at: one load
            family, style = (family or path.stem).strip(), (style or "").strip()
            if family in NOT_DIGITS or (family, style) in found:
                continue
            face = FontFace(family, style, path)
            if _types_digits(face):
                found[family, style] = face
        except Exception:  # noqa: BLE001 - a broken font fails in many ways inside PIL or fontTools: skip it
            continue
    return tuple(sorted(found.values(), key=lambda f: (f.family, f.style)))


def _types_digits(face: FontFace) -> bool:
    """The font maps all ten digits to glyphs of its own, and they type ten inked, different glyphs (a font
    missing some digits types its .notdef box, or nothing, in their place)."""
    with TTFont(str(face.path), lazy=True) as font:
        cmap = font.getBestCmap() or {}
    if not all(ord(str(d)) in cmap for d in range(10)):
        return False
    glyphs = [_typed(face.path, d, 32) for d in range(10)]
    return all(g.max() > 0 for g in glyphs) and len({g.tobytes() for g in glyphs}) == 10


@lru_cache(maxsize=64)
def _font(path: Path, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), px)


def _typed(path: Path, digit: int, px: int) -> np.ndarray:
    font = _font(path, px)
    left, top, right, bottom = font.getbbox(str(digit))
    pad = px // 4
    image = Image.new("L", (max(right - left, 1) + 2 * pad, max(bottom - top, 1) + 2 * pad), 0)
    ImageDraw.Draw(image).text((pad - left, pad - top), str(digit), font=font, fill=255)
    return np.asarray(image)


def typed_digits(face: FontFace) -> np.ndarray:
    """The face's 0-9 as uint8 (10, 28, 28) MNIST-style images: white ink on black, the ink's longer side
    20 px, centred by mass (core.data.preprocess.to_model_input of the typed glyph)."""
    return np.stack([np.rint(to_model_input(_typed(face.path, d, RENDER_PX)) * 255).astype(np.uint8)
                     for d in range(10)])


def design(family: str) -> str:
    """A family's design: the first word of its name ("Quicksand Light", "CabinSketch" -> quicksand, cabin),
    or the design it is drawn from (DESIGN_ALIASES), so that a design's weights, widths and siblings land on the
    same side of the split."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", family)
    first = (words[0] if words else family).lower()
    return DESIGN_ALIASES.get(first, first)


def held_out(family: str) -> bool:
    """Whether a font family is kept out of the starter's training, to measure it on (fixed by its design's
    name, so every machine with the same fonts splits them the same way)."""
    if design(family) in ALWAYS_HELD_OUT:
        return True
    return int(hashlib.sha256(design(family).encode()).hexdigest()[:8], 16) % HELD_OUT_SHARE == 0


def split_faces(faces: list[FontFace]) -> tuple[list[FontFace], list[FontFace]]:
    """(faces to learn from, faces kept out): every face of a family lands on the same side."""
    return [f for f in faces if not held_out(f.family)], [f for f in faces if held_out(f.family)]


def glyph_set(faces: list[FontFace]) -> tuple[np.ndarray, np.ndarray, list[FontFace]]:
    """All faces' typed digits: uint8 (10·F, 28, 28) images, int64 labels and each image's face."""
    if not faces:
        return np.empty((0, 28, 28), np.uint8), np.empty(0, np.int64), []
    images = np.concatenate([typed_digits(f) for f in faces])
    return images, np.tile(np.arange(10), len(faces)), [f for f in faces for _ in range(10)]


@dataclass(frozen=True)
class FontMeasure:
    """What a model is measured on for `faces`: their typed digits as model inputs, and each re-stroked."""
    typed: np.ndarray  # float32 (10·F, 28, 28)
    labels: np.ndarray
    drawn: np.ndarray  # float32 (10·F·repeats, 28, 28)
    drawn_labels: np.ndarray
    drawn_faces: list[FontFace]


def font_measure(faces: list[FontFace], repeats: int = MEASURE_REPEATS,
                 restroke: Callable[[np.ndarray, int, tuple[float, float]], np.ndarray] | None = None) -> FontMeasure:
    """The held-out fonts' measure: each face's digits as typed, and re-stroked `repeats` times with MEASURE_PEN
    pens from MEASURE_SEED. `restroke(images, seed, pen)` may draw them in parallel; it must equal
    core.data.restroke.restroked_inputs (the default)."""
    images, labels, of_face = glyph_set(faces)
    restroke = restroke or (lambda ims, seed, pen: restroked_inputs(ims, seed=seed, pen=pen))
    drawn = restroke(np.repeat(images, repeats, 0), MEASURE_SEED, MEASURE_PEN)
    return FontMeasure(unit(images), labels, drawn, np.repeat(labels, repeats),
                       [face for face in of_face for _ in range(repeats)])

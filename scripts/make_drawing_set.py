"""Make a labelled drawing set of generated drawings in the run store: a stand-in for one class's handwriting.

    python scripts/make_drawing_set.py                       # 200 drawings as "Class 3B (generated)" in $DIGIT_LAB_HOME
    python scripts/make_drawing_set.py --name "my digits" --n 500 --seed 1 --shear 0.4 --verdict starter
Drawings come from core.data.drawings.class_drawing (template strokes, centred, leaning hard right), each saved
with its canvas and its model input exactly as the Draw page would read it; `--verdict starter` also stores what
the starter model said. Then: `digit-lab eval starter --drawings "Class 3B (generated)"`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.data.drawing_sets import DrawingStore, Verdict, prepare  # noqa: E402
from core.data.drawings import class_drawing  # noqa: E402
from core.data.preprocess import to_model_input  # noqa: E402
from core.errors import DigitLabError  # noqa: E402
from core.runs import RunStore  # noqa: E402


def make_set(sets: DrawingStore, name: str, n: int = 200, seed: int = 0, shear: float = 0.6,
             verdict_key: str | None = None, store: RunStore | None = None) -> str:
    """Create set `name` holding `n` generated drawings (digits interleaved 0..9); returns its id."""
    if n < 100:
        raise DigitLabError(f"A stand-in for a class's handwriting needs at least 100 drawings (got {n}).")
    predictor = None
    if verdict_key:
        from core.inference.predict import Predictor

        predictor = Predictor.load(verdict_key, store)
    items = []
    for i in range(n):
        digit = i % 10
        canvas = class_drawing(digit, np.random.default_rng([seed, i]), shear)
        x = to_model_input(canvas)
        verdict = None
        if predictor is not None:
            p = predictor.predict_prepared(x)
            verdict = Verdict(verdict_key, p.label, p.confidence)
        items.append(prepare(x, canvas, label=digit, drawer="generator", drawer_name="generated class",
                             verdict=verdict, source=f"class_drawing(seed={seed}, i={i}, shear={shear})"))
    if sets.find(name) is not None:
        raise DigitLabError(f"A drawing set called {name!r} already exists; choose another --name.")
    sets.add_many(name, items, create=True)
    return sets.resolve(name).id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="Class 3B (generated)")
    parser.add_argument("--n", type=int, default=200, help="drawings (at least 100; default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shear", type=float, default=0.6, help="how hard the class leans right (default 0.6)")
    parser.add_argument("--verdict", metavar="MODEL", help="store this model's answer with each drawing ('starter')")
    args = parser.parse_args(argv)
    store = RunStore()
    try:
        set_id = make_set(DrawingStore(store.root), args.name, args.n, args.seed, args.shear, args.verdict, store)
    except DigitLabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Made drawing set {args.name!r} ({set_id}) with {args.n} drawings in {store.root}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well a model reads drawings: template drawings and real MNIST test handwriting re-stroked on the canvas.

    python benchmarks/drawings.py [RUN_ID_OR_WEIGHTS] [--handwriting 1000] [--per-digit 100]
Every drawing goes canvas -> core.data.preprocess.to_model_input -> model, as in the app. Prints accuracy,
accuracy per digit and the commonest misreads for both sets; needs MNIST under $DIGIT_LAB_DATA.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.data.datasets import load_splits  # noqa: E402
from core.data.drawings import drawing_set, reading_report  # noqa: E402
from core.data.restroke import restroked_inputs  # noqa: E402
from core.inference.predict import Predictor  # noqa: E402
from core.data.preprocess import to_model_inputs  # noqa: E402


def show(title: str, report: dict) -> None:
    print(f"{title}: {report['accuracy']:.2%} right over {report['images']:,} drawings")
    print("  per digit: " + ", ".join(f"{d}: {a:.1%}" for d, a in report["per_digit"].items()))
    print("  commonest misreads (true->read: count): " + (", ".join(report["misreads"]) or "none"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default="starter")
    parser.add_argument("--handwriting", type=int, default=1000, help="MNIST test digits to re-stroke (seed 0)")
    parser.add_argument("--per-digit", type=int, default=100, help="template drawings per digit (seed 0)")
    args = parser.parse_args()
    predictor = Predictor.starter() if args.model == "starter" else Predictor.load(args.model)

    start = time.perf_counter()
    mnist = load_splits("mnist")
    images, labels = mnist.test_x[:args.handwriting].numpy(), mnist.test_y[:args.handwriting].numpy()
    guess = predictor.probabilities(restroked_inputs(images, seed=0)).argmax(axis=1)
    show("re-stroked MNIST test handwriting (seed 0)", reading_report(labels, guess))
    canvases, truth = drawing_set(args.per_digit, seed=0)
    guess = predictor.probabilities(to_model_inputs(canvases)).argmax(axis=1)
    show("template drawings (seed 0)", reading_report(truth, guess))
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

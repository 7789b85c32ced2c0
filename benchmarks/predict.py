"""Draw & predict benchmarks: canvas-to-probabilities latency and accuracy on drawn digits.

    python benchmarks/predict.py [RUN_ID_OR_WEIGHTS]      # default: the shipped starter model
Latency is printed as p50/p95 with a ratio against the bare model forward pass measured in the same run
(the floor no preprocessing can beat); accuracy is over the synthetic drawing set (core/data/drawings.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.data.drawings import drawing_set  # noqa: E402
from core.inference.predict import Predictor  # noqa: E402
from core.data.preprocess import to_model_input  # noqa: E402


def percentiles(fn, inputs, repeat: int) -> tuple[float, float]:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(inputs[i % len(inputs)])
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default="starter")
    parser.add_argument("--per-digit", type=int, default=100, help="drawings per digit for the accuracy figure")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    predictor = Predictor.starter() if args.model == "starter" else Predictor.load(args.model)

    canvases, labels = drawing_set(args.per_digit, seed=0)
    prepared = [to_model_input(c) for c in canvases[:50]]
    for c in canvases[:20]:  # warm-up: first calls allocate
        predictor.predict(c)
    full = percentiles(predictor.predict, canvases[:50], args.repeat)
    forward = percentiles(lambda x: predictor.probabilities(x[None]), prepared, args.repeat)
    prep = percentiles(to_model_input, canvases[:50], args.repeat)
    print(f"canvas (280×280 RGBA) -> probabilities: p50 {full[0]:.2f} ms, p95 {full[1]:.2f} ms (target p50 <= 5 ms)")
    print(f"  preprocessing alone:                 p50 {prep[0]:.2f} ms, p95 {prep[1]:.2f} ms")
    print(f"  model forward alone (reference):     p50 {forward[0]:.2f} ms, p95 {forward[1]:.2f} ms")
    print(f"  ratio full / forward: {full[0] / forward[0]:.2f}x")

    predictions = predictor.predict_batch(canvases)
    correct = np.array([p.label == y for p, y in zip(predictions, labels)])
    print(f"drawn digits: {correct.mean():.2%} right over {len(labels)} drawings (seed 0)")
    print("  per digit: " + ", ".join(f"{d}: {correct[labels == d].mean():.0%}" for d in range(10)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How many epochs does the article's MLP (plain SGD, lr 0.01, batch 100) need to reach 97% on the test set?

    python benchmarks/mlp_epochs.py [--epochs 300] [--momentum 0.9]
Trains the seed-mlp preset once, measuring test accuracy after every epoch (the test set is only read, never
used for any decision), and prints the first epoch at 97% and the accuracy every 25 epochs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import TrainConfig  # noqa: E402
from core.data.datasets import load_splits  # noqa: E402
from core.inference.metrics import evaluate  # noqa: E402
from core.training.train import train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--target", type=float, default=0.97)
    args = parser.parse_args()
    cfg = TrainConfig.from_preset("seed-mlp", epochs=args.epochs, momentum=args.momentum)
    splits = load_splits("mnist")
    curve: list[float] = []
    start = time.perf_counter()
    train(cfg, splits, save_state=lambda s: curve.append(evaluate(s.model, splits.test_x, splits.test_y).accuracy))
    wall = time.perf_counter() - start
    first = next((i + 1 for i, acc in enumerate(curve) if acc >= args.target), None)
    print(f"seed-mlp, SGD lr {cfg.lr} momentum {cfg.momentum}, batch {cfg.batch_size}: {len(curve)} epochs in {wall:.0f} s")
    print(f"first epoch with test accuracy >= {args.target:.0%}: {first}; final {curve[-1]:.2%}")
    print("epoch: " + ", ".join(f"{e}: {curve[e - 1]:.2%}" for e in range(25, len(curve) + 1, 25)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

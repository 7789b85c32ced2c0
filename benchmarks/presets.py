"""Train each preset on full MNIST on this machine and report test accuracy and wall time.

    python benchmarks/presets.py seed-mlp seed-cnn fast best     # all four: ~20 min on 2 CPU cores
Writes benchmarks/results/presets.json (merged per preset) and prints a markdown table for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import PRESETS, TrainConfig  # noqa: E402
from core.training.experiment import create_run, execute_run  # noqa: E402
from core.runs import RunStore  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "presets.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--home", default=os.environ.get("DIGIT_LAB_HOME", ".digit-lab/bench"))
    args = parser.parse_args()
    store = RunStore(args.home)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for preset in args.presets:
        cfg = TrainConfig.from_preset(preset)
        start = time.perf_counter()
        record = execute_run(store, create_run(store, cfg, name=f"benchmark {preset}").id)
        wall = time.perf_counter() - start
        results[preset] = {
            "run_id": record.id, "status": record.status, "model": cfg.model, "epochs": cfg.epochs,
            "test_accuracy": record.metrics.get("test_accuracy"), "train_seconds": record.timings.get("train_seconds"),
            "wall_seconds": round(wall, 1), "images_per_second": record.timings.get("images_per_second"),
            "device": record.timings.get("device"), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        }
        floor = PRESETS[preset]["floor"]
        results[preset]["floor"] = floor
        verdict = "PASS" if record.status == "completed" and (record.metrics.get("test_accuracy") or 0) >= floor else "FAIL"
        results[preset]["verdict"] = verdict
        print(f"{preset}: {record.status} {results[preset]['test_accuracy']:.4f} in {wall:.0f} s — {verdict} "
              f"(floor {floor:.2%})", flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| preset | model | epochs | test accuracy | floor | training time | images/s |\n|---|---|---|---|---|---|---|")
    failed = []
    for preset, r in results.items():
        floor = PRESETS[preset]["floor"] if preset in PRESETS else None
        ok = floor is not None and (r["test_accuracy"] or 0) >= floor
        failed += [] if ok else [preset]
        print(f"| `{preset}` | {r['model']} | {r['epochs']} | {r['test_accuracy']:.2%} | "
              f"{'PASS' if ok else 'FAIL'} (≥ {floor:.2%}) | {r['train_seconds'] / 60:.1f} min | {r['images_per_second']:.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

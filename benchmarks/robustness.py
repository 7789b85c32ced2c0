"""Measure the price of robustness and privacy on this machine: attacks on the starter, the `robust` and `private`
presets against `fast`, trained in the same run.

    python benchmarks/robustness.py            # ~30-60 min on 2 shared CPU cores
    python benchmarks/robustness.py --presets --n 200   # the starter's curves only, quicker
Writes benchmarks/results/robustness.json (after every step, so a stopped run keeps what it measured) and prints
markdown tables for the README.
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
from core.data.datasets import load_splits  # noqa: E402
from core.inference.weights import load_source, model_source  # noqa: E402
from core.insight.attacks import AttackSettings, adversarial_accuracy  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.training.config import PRESETS, TrainConfig  # noqa: E402
from core.training.experiment import create_run, execute_run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "robustness.json"
EPS = (0.05, 0.1, 0.2, 0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="test images attacked (default 1000)")
    parser.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    parser.add_argument("--presets", nargs="*", default=["fast", "robust", "private"],
                        help="presets to train (fast is the reference; default fast robust private)")
    parser.add_argument("--skip-starter", action="store_true", help="do not attack the starter")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to merge results into")
    parser.add_argument("--home", default=os.environ.get("DIGIT_LAB_HOME", ".digit-lab/bench"))
    args = parser.parse_args()
    store = RunStore(args.home)
    splits = load_splits("mnist")
    x, y = splits.test_x[:args.n], splits.test_y[:args.n]
    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                 "torch": torch.__version__, "n": args.n, "pgd_steps": args.steps}}

    def save() -> None:
        args.results.parent.mkdir(exist_ok=True)
        args.results.write_text(json.dumps(results, indent=2) + "\n")

    def attack_all(model, name: str, eps_values, attacks=("fgsm", "pgd")) -> dict:
        out = {}
        for attack in attacks:
            for eps in eps_values:
                start = time.perf_counter()
                r = adversarial_accuracy(model, x, y, AttackSettings(attack, eps, args.steps))
                out[f"{attack}@{eps:g}"] = r.adversarial_accuracy
                out["clean"] = r.clean_accuracy
                print(f"{name}: {attack} ε={eps:g}: {r.adversarial_accuracy:.2%} (clean {r.clean_accuracy:.2%}, "
                      f"{time.perf_counter() - start:.0f} s)", flush=True)
        return out

    if args.results.is_file():  # keep earlier measurements of what this run does not redo
        results = {**json.loads(args.results.read_text()), "machine": results["machine"]}
    results.setdefault("presets", {})
    if not args.skip_starter:
        starter = load_source(model_source(store, "starter"))
        results["starter"] = attack_all(starter, "starter", EPS)
        save()
    for preset in args.presets:
        cfg = TrainConfig.from_preset(preset)
        start = time.perf_counter()
        record = execute_run(store, create_run(store, cfg, name=f"benchmark {preset}").id)
        row = {"run_id": record.id, "status": record.status, "message": record.message,
               "test_accuracy": record.metrics.get("test_accuracy"), "floor": PRESETS[preset]["floor"],
               "train_seconds": record.timings.get("train_seconds"),
               "wall_seconds": round(time.perf_counter() - start, 1),
               "epsilon": record.metrics.get("epsilon"), "delta": record.metrics.get("delta"),
               "robust_accuracy": record.metrics.get("robust_accuracy"), "robust_eps": record.metrics.get("robust_eps")}
        print(f"{preset}: {row}", flush=True)
        if preset == "robust" and record.status == "completed":
            model = load_source(model_source(store, record.id))
            row["attacks"] = attack_all(model, preset, (0.1, 0.3), attacks=("pgd",))
        results["presets"][preset] = row
        save()

    print_tables(results)
    return 0


def print_tables(results: dict) -> None:
    n, steps = results["machine"]["n"], results["machine"]["pgd_steps"]
    s = results.get("starter") or {}
    if s:
        print(f"\nStarter under attack ({n:,} MNIST test images; PGD {steps} steps, step 2.5·ε/{steps}, "
              "random start)\n")
        print("| attack | clean | " + " | ".join(f"ε = {e:g}" for e in EPS) + " |\n|---|---|" + "---|" * len(EPS))
    for attack in ("fgsm", "pgd") if s else ():
        cells = " | ".join(f"{s[f'{attack}@{e:g}']:.2%}" for e in EPS)
        print(f"| {attack.upper()} | {s['clean']:.2%} | {cells} |")
    rows = results.get("presets") or {}
    if not rows:
        return
    print("\n| preset | test accuracy | PGD ε = 0.1 | PGD ε = 0.3 | privacy ε (δ) | training time | vs fast |"
          "\n|---|---|---|---|---|---|---|")
    fast = (rows.get("fast") or {}).get("train_seconds") or 0
    for preset, r in rows.items():
        acc = f"{r['test_accuracy']:.2%}" if r["test_accuracy"] is not None else r["status"]
        attacks = r.get("attacks") or {}
        pgd = [f"{attacks[k]:.2%}" if k in attacks else "-" for k in ("pgd@0.1", "pgd@0.3")]
        privacy = f"{r['epsilon']:.2f} ({r['delta']:g})" if r.get("epsilon") is not None else "-"
        secs = r["train_seconds"] or 0
        ratio = f"{secs / fast:.1f}×" if fast else "-"
        print(f"| `{preset}` | {acc} | {pgd[0]} | {pgd[1]} | {privacy} | {secs / 60:.1f} min | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())

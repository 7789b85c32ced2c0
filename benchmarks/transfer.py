"""Is pre-training worth it here? The README's transfer figures, from experiments in the run store.

    python benchmarks/transfer.py --run                    # MNIST → Fashion-MNIST and back, default settings
    python benchmarks/transfer.py EXPERIMENT_ID [...]      # report experiments already in $DIGIT_LAB_HOME
Writes benchmarks/results/transfer.json (summary per strategy and k, the pre-training cost and the verdicts) and
prints markdown tables for the README. Every figure comes from the stored runs, as on the Invest page.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.insight.invest import human_flops, k_order, k_text, summarise, verdict  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.training.transfer import (TransferSpec, create_experiment, experiment_points, get_experiment,  # noqa: E402
                                    pretrain_summary, run_experiment)

RESULTS = Path(__file__).parent / "results" / "transfer.json"
DIRECTIONS = (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist"))


def report(store: RunStore, exp_id: str) -> dict:
    exp = get_experiment(store, exp_id)
    points = experiment_points(store, exp)
    summary, pretrain = summarise(points), pretrain_summary(store, exp)
    spec = exp.settings
    verdicts = {k_text(k): verdict(summary, pretrain, k) for k in spec.ks}
    print(f"\n### {exp.name} ({exp.id})\n")
    print(f"Pre-training: {pretrain['name']}, {pretrain['train_seconds']:.0f} s, {human_flops(pretrain['flops'])}, "
          f"test accuracy on {pretrain['dataset']} {pretrain['test_accuracy']:.2%}.\n")
    print("| labels per class | linear probe | fine-tuned | from scratch |")
    print("|---|---|---|---|")
    for k in sorted({r["k"] for r in summary}, key=k_order):
        cells = []
        for strategy in ("probe", "finetune", "scratch"):
            row = next((r for r in summary if r["strategy"] == strategy and r["k"] == k), None)
            cells.append("–" if row is None else f"{row['mean']:.1%} ± {row['std']:.1%}" if row["n"] > 1
                         else f"{row['mean']:.1%} (1 seed)")
        print(f"| {k_text(k)} | " + " | ".join(cells) + " |")
    print()
    for said in verdicts.values():
        print(f"- {said.text}")
    return {"id": exp.id, "name": exp.name, "spec": spec.to_dict(), "pretrain": pretrain, "summary": summary,
            "verdicts": {k: {"text": v.text, "numbers": v.numbers} for k, v in verdicts.items()},
            "points": points}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="experiment ids to report (default: run both directions)")
    parser.add_argument("--run", action="store_true", help="run MNIST → Fashion-MNIST and back with the defaults")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    store = RunStore()
    ids = list(args.experiments)
    if args.run:
        for source, target in DIRECTIONS:
            exp = create_experiment(store, TransferSpec(source=source, target=target))
            run_experiment(store, exp.id)
            ids.append(exp.id)
    if not ids:
        parser.error("give experiment ids or --run")
    reports = [report(store, exp_id) for exp_id in ids]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine()},
                                        "experiments": reports}, indent=2, default=str) + "\n")
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

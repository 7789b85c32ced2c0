"""Train each preset on full MNIST on this machine and report test accuracy and wall time.

    python benchmarks/presets.py seed-mlp seed-cnn fast best     # all four: ~20 min on 2 CPU cores
    python benchmarks/presets.py best --seeds 0 1 2 3 4           # five seeds and their ensemble (35 min in bf16 on AMX)
    python benchmarks/presets.py best --seeds 0 1 2 3 4 --reuse   # only the seeds not already trained in --home
Writes benchmarks/results/presets.json (merged per preset) and prints a markdown table for the README. With
several seeds, each seed's run is recorded, the preset's row is the first seed's, and the ensemble (probabilities
averaged over the seeds' models, as `Predictor.ensemble` does) is scored on the same test set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import PRESETS, TrainConfig  # noqa: E402
from core.training.experiment import create_run, execute_run  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.inference.evaluation import split_predictions  # noqa: E402
from core.inference.metrics import EvalResult  # noqa: E402
from core.inference.weights import model_source  # noqa: E402
from server_timing import cpu_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "presets.json"
ENSEMBLE_TARGET = {"best": 0.997}  # issue 11: the best preset's seeds together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("presets", nargs="*", default=list(PRESETS))
    parser.add_argument("--home", default=os.environ.get("DIGIT_LAB_HOME", ".digit-lab/bench"))
    parser.add_argument("--seeds", type=int, nargs="+", help="train each preset once per seed and score the ensemble")
    parser.add_argument("--reuse", action="store_true",
                        help="a completed run in --home with exactly a preset's settings (and seed) is scored, "
                             "not trained again; its recorded training time counts")
    args = parser.parse_args()
    store = RunStore(args.home)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for preset in args.presets:
        if args.seeds:
            results[preset] = seeds_and_ensemble(store, preset, args.seeds, args.reuse)
        else:
            results[preset] = one_run(store, TrainConfig.from_preset(preset), f"benchmark {preset}", args.reuse)
        floor = PRESETS[preset]["floor"]
        results[preset]["floor"] = floor
        record_status, accuracy = results[preset]["status"], results[preset]["test_accuracy"] or 0
        verdict = "PASS" if record_status == "completed" and accuracy >= floor else "FAIL"
        results[preset]["verdict"] = verdict
        print(f"{preset}: {record_status} {accuracy:.4f} in {results[preset]['wall_seconds']:.0f} s — {verdict} "
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
        if "ensemble" in r:
            e = r["ensemble"]
            print(f"  seeds {', '.join(f'{s}: {a:.2%}' for s, a in e['seed_accuracy'].items())}; ensemble of "
                  f"{len(e['seed_accuracy'])}: **{e['test_accuracy']:.2%}** after {e['train_seconds'] / 60:.1f} min "
                  f"of training in all ({e['wall_seconds'] / 60:.1f} min wall)"
                  + (f" — {'PASS' if e['test_accuracy'] >= ENSEMBLE_TARGET[preset] else 'FAIL'} "
                     f"(target ≥ {ENSEMBLE_TARGET[preset]:.2%})" if preset in ENSEMBLE_TARGET else ""))
    return 1 if failed else 0


def seeds_and_ensemble(store: RunStore, preset: str, seeds: list[int], reuse: bool = False) -> dict:
    """One run per seed; the first seed's figures as the preset's row, plus the seeds' ensemble on the test set."""
    runs = [one_run(store, TrainConfig.from_preset(preset, seed=seed), f"benchmark {preset} seed {seed}", reuse)
            for seed in seeds]
    parts = [split_predictions(store, model_source(store, r["run_id"]), "test") for r in runs]
    ensemble = EvalResult.from_probs(sum(p.probs for p in parts) / len(parts), parts[0].labels)
    return {**runs[0], "ensemble": {
        "seed_accuracy": {str(s): r["test_accuracy"] for s, r in zip(seeds, runs)},
        "run_ids": [r["run_id"] for r in runs], "test_accuracy": ensemble.accuracy,
        "train_seconds": round(sum(r["train_seconds"] for r in runs), 1),
        "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1)}}


def one_run(store: RunStore, cfg: TrainConfig, name: str, reuse: bool = False) -> dict:
    """Train `cfg` (or, with `reuse`, take the newest completed run of exactly these settings) and its figures."""
    done = [r for r in store.list(status="completed", model=cfg.model) if r.config == cfg.to_dict()] if reuse else []
    if done:
        record = done[0]
        print(f"{name}: reusing run {record.id} ({record.metrics.get('test_accuracy', 0):.2%})", flush=True)
        wall = record.timings.get("train_seconds", 0)  # its wall time was not recorded; training is most of it
    else:
        start = time.perf_counter()
        record = execute_run(store, create_run(store, cfg, name=name).id)
        wall = time.perf_counter() - start
    return {
        "run_id": record.id, "status": record.status, "model": cfg.model, "epochs": cfg.epochs, "seed": cfg.seed,
        "test_accuracy": record.metrics.get("test_accuracy"), "train_seconds": record.timings.get("train_seconds"),
        "wall_seconds": round(wall, 1), "images_per_second": record.timings.get("images_per_second"),
        "device": record.timings.get("device"), "precision": record.timings.get("precision", cfg.precision), "cpu": cpu_model(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())

"""One-shot device check: the speed benchmarks on a GPU, each against its reference in the same run; one JSON object.

    python benchmarks/gpu_check.py [--presets fast best] [--seeds 0 1 2] [--precision auto] [--out results.json]
                                   [--device cpu]
For a session that is lent a GPU for a few minutes (37 s on an H200 with the steps replayed from CUDA graphs, most
of it `best`; 2 minutes without, DIGIT_LAB_CUDA_GRAPHS=0):
1. presets: each of `--presets` trained on the GPU with its data resident there, in fp32 and in bf16 autocast (after
   an untimed 20-step warm-up of the same settings), beside a short slice of it on this machine's CPU;
2. time to 99%: `fast` (precision auto, or `--precision`) against the best public recipe (benchmarks/speed.py),
   both on the GPU, seeds alternating, after a warm-up of each; the issue's target is ≤ 0.5 s for `fast` on a
   current data-centre GPU;
3. throughput: `seed-cnn` for one epoch through core against the plain DataLoader loop on the GPU.
`--device cpu` runs all of it on the CPU (a smoke test: the same code paths; speed.py is the CPU benchmark), and
`--steps N` caps every run at N steps (tests/test_gpu_check.py runs both in seconds).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import TrainConfig  # noqa: E402
from core.data.datasets import Splits, load_splits  # noqa: E402
from core.inference.metrics import evaluate  # noqa: E402
from core.training.devices import pick_device, resolve_precision  # noqa: E402
from core.training.readback import read_back_every  # noqa: E402
from core.training.train import train  # noqa: E402
from speed import plain_loop, public_recipe, sync  # noqa: E402 - beside this script

TARGET_SECONDS = 0.5  # the time to 99% for `fast` on a current data-centre GPU


@functools.cache
def resident(dataset: str, device: torch.device) -> Splits:
    """A dataset's splits on `device`, read once for every run of this check."""
    return load_splits(dataset, device)


def timed(cfg: TrainConfig, device: torch.device) -> dict:
    splits = resident(cfg.dataset, device)
    sync(device)
    events: list[dict] = []  # "started" says whether full-size steps are to be replayed from a CUDA graph; a
    start = time.perf_counter()  # "warning" that recording it failed
    outcome = train(cfg, splits, device=device,
                    on_event=lambda e: e["type"] in ("started", "warning") and events.append(e))
    sync(device)  # the timing must include queued kernels
    seconds = time.perf_counter() - start
    test = evaluate(outcome.model, splits.test_x, splits.test_y)
    return {"status": outcome.status, "steps": outcome.state.step, "seconds": round(seconds, 3),
            "train_seconds": round(outcome.state.train_seconds, 3),
            "images_per_second": round(outcome.state.images / seconds, 1), "test_accuracy": round(test.accuracy, 4),
            "data_on": str(splits.train_x.device), "precision": resolve_precision(cfg, device),
            "cuda_graph": events[0].get("cuda_graph", False) and not any(e["type"] == "warning" for e in events)}


def presets(names: list[str], device: torch.device, cpu_steps: int, steps: int | None = None) -> dict:
    runs = {}
    for preset in names:
        base = TrainConfig.from_preset(preset)
        runs[f"{preset}/cpu-reference"] = timed(base.replace(device="cpu", max_steps=cpu_steps), torch.device("cpu"))
        for precision in ("fp32", "bf16"):
            cfg = base.replace(device=device.type, precision=precision, max_steps=steps)
            timed(cfg.replace(max_steps=20), device)  # warm-up: CUDA context, cuDNN's choice of kernels
            runs[f"{preset}/{device.type}-{precision}"] = timed(cfg, device)
        print(json.dumps(runs, indent=1), file=sys.stderr, flush=True)
    return runs


def time_to_99(seeds: list[int], device: torch.device, steps: int | None = None, precision: str = "auto") -> dict:
    fast = TrainConfig.from_preset("fast").replace(device=device.type, max_steps=steps, precision=precision)
    timed(fast.replace(max_steps=20), device)  # warm-ups, untimed
    public_recipe(0, device=device, max_steps=20)
    ours, recipe = [], []
    for seed in seeds:
        ours.append(timed(fast.replace(seed=seed), device))
        recipe.append(public_recipe(seed, device=device, max_steps=steps))
    median_ours = statistics.median(r["train_seconds"] for r in ours)
    median_recipe = statistics.median(r["train_seconds"] for r in recipe)
    return {"fast": ours, "public_recipe": recipe, "fast_median_seconds": median_ours,
            "recipe_median_seconds": median_recipe, "ratio": round(median_ours / median_recipe, 3),
            "all_fast_seeds_reach_99": all(r["test_accuracy"] >= 0.99 for r in ours),
            "target_seconds": TARGET_SECONDS, "target_met": median_ours <= TARGET_SECONDS}


def throughput(device: torch.device, steps: int | None = None) -> dict:
    cfg = TrainConfig.from_preset("seed-cnn").replace(device=device.type, epochs=1, max_steps=steps)
    timed(cfg.replace(max_steps=20), device)
    ours = timed(cfg, device)
    plain = plain_loop(seconds_budget=30 if steps is None else 1, device=device)
    return {"seed_cnn": ours, "plain_loop": plain,
            "ratio": round(ours["images_per_second"] / plain["images_per_second"], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["fast", "best"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the time-to-99 part")
    parser.add_argument("--cpu-steps", type=int, default=60, help="steps of each preset timed on CPU as reference")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the time-to-99 part's precision (the preset's is auto)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one) or cpu (a smoke test)")
    parser.add_argument("--steps", type=int, help="cap every run at this many steps (a smoke test, not a figure)")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = pick_device(args.device)
    started = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (no GPU used)",
              "torch": torch.__version__, "figures_read_back_every_steps": read_back_every(device)}
    report["time_to_99"] = time_to_99(args.seeds, device, args.steps, args.precision)
    print(json.dumps(report["time_to_99"], indent=1), file=sys.stderr, flush=True)
    report["throughput"] = throughput(device, args.steps)
    print(json.dumps(report["throughput"], indent=1), file=sys.stderr, flush=True)
    report["runs"] = presets(args.presets, device, args.cpu_steps, args.steps)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training speed against references measured in the same run: time to 99%, and throughput.

    python benchmarks/speed.py                    # both parts: ~4 min on 2 idle CPU cores
    python benchmarks/speed.py --part time-to-99 --seeds 0 1 2
    python benchmarks/speed.py --part throughput

1. Time to 99%: `digit-lab train --preset fast --json` (its `train_seconds` and `test_accuracy`) against the best
   public recipe for this, re-implemented below as a plain script: one epoch, batch 256, a CNN with 24 and 32
   channels (5×5 then 3×3 convolutions, max-pool before ReLU, a 256-unit dense layer), Adam lr 1e-2 with
   betas (0.7, 0.9) and a one-cycle schedule, the data resident as pre-normalised tensors (tuomaso/train_mnist_fast,
   "99% on MNIST in 0.76 s"), run as its own process like the CLI. Seeds alternate between the two, so load on the
   machine falls on both. The recipe also runs a second time with the settings core trains `fast` with (its
   allocator setting, core.training.allocator, and channels-last convolution weights, core.training.devices.place),
   which shows how much of the difference those settings alone make; where core trains `fast` in bf16 autocast
   (precision auto on a CPU with AMX, core.training.devices.resolve_precision) that run gets bf16 autocast too.
   Target: every `fast` seed ≥ 99.0% and its median time ≤ 0.8× the recipe's.
2. Throughput: `--preset seed-cnn --epochs 1` through `core` (`images_per_second`) against a plain PyTorch loop
   (torchvision.datasets.MNIST + ToTensor + DataLoader, batch 64, Adam, the same model), target ≥ 1.5×; and the
   model's achieved training GFLOP/s against a large matmul's GFLOP/s measured here, in the precision the run
   trained in (fp32, or bf16 where core's auto precision chose it): how close to the machine's limit the loop runs.
Writes benchmarks/results/speed.json and prints markdown tables for the README.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from core.data.datasets import data_root, load_splits  # noqa: E402
from core.models.zoo import ZOO, build_model, train_flops  # noqa: E402
from core.training.config import TrainConfig  # noqa: E402
from core.training.devices import resolve_precision, usable_cores  # noqa: E402
from server_timing import cpu_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "speed.json"
MEAN, STD = 0.1307, 0.3081


# -- the public recipe, as a plain script would write it -----------------------------------------------
def recipe_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(24, 32, 3), nn.MaxPool2d(2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10))


def sync(device: torch.device) -> None:
    """Wait for a GPU's queued work (a timer must not stop before it); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def public_recipe(seed: int, tuned: bool = False, device: torch.device = torch.device("cpu"),
                  max_steps: int | None = None) -> dict:
    """One epoch of the recipe; seconds are the training loop's alone (data already resident), like `train_seconds`.
    `tuned`: with the settings core trains `fast` with (its allocator setting, channels-last convolution weights,
    and bf16 autocast where its auto precision picks it on this machine). `device`: where the data and the model
    live (benchmarks/gpu_check.py runs it on a GPU); `max_steps`: stop early (its smoke test)."""
    splits = load_splits("mnist")
    x = ((splits.train_x.float() / 255 - MEAN) / STD).unsqueeze(1)
    y = splits.train_y
    x, y = torch.cat([x, ((splits.val_x.float() / 255 - MEAN) / STD).unsqueeze(1)]), torch.cat([y, splits.val_y])
    x, y = x.to(device), y.to(device)
    torch.manual_seed(seed)
    net = recipe_net().to(device)
    if tuned:
        from core.training.allocator import keep_freed_memory

        assert keep_freed_memory(), "this C library cannot be tuned"
        net = net.to(memory_format=torch.channels_last)
    batch, lr = 256, 1e-2
    steps = math.ceil(len(y) / batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.7, 0.9))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    order = torch.randperm(len(y)).to(device)
    bf16 = tuned and fast_precision(device) == "bf16"
    net.train()
    sync(device)
    start = time.perf_counter()
    for i in range(min(steps, max_steps or steps)):
        idx = order[i * batch:(i + 1) * batch]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x[idx])
        loss = F.cross_entropy(logits.float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    sync(device)
    seconds = time.perf_counter() - start
    net.eval()
    test_x, test_y = ((splits.test_x.float() / 255 - MEAN) / STD).unsqueeze(1).to(device), splits.test_y.to(device)
    with torch.no_grad():
        correct = sum(int((net(test_x[i:i + 2000]).argmax(1) == test_y[i:i + 2000]).sum())
                      for i in range(0, len(test_y), 2000))
    return {"train_seconds": round(seconds, 3), "test_accuracy": correct / len(test_y)}


def plain_loop(seconds_budget: float | None = None, device: torch.device = torch.device("cpu")) -> dict:
    """The everyday PyTorch loop: torchvision's MNIST, ToTensor, a DataLoader, batch 64, Adam, the seed CNN (on a
    GPU, each batch copied to it as such a loop does)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    data = datasets.MNIST(str(data_root()), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(data, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    net = build_model("seed-cnn").to(device)  # the same model core trains (it normalises inside)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    images, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(y)
        if seconds_budget and time.perf_counter() - start > seconds_budget:
            break
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": round(seconds, 3), "images_per_second": round(images / seconds, 1)}


def fast_precision(device: torch.device = torch.device("cpu")) -> str:
    """What `fast` trains in on `device` (fp32, or bf16 where core's auto precision picks it)."""
    return resolve_precision(TrainConfig.from_preset("fast"), device)


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n×n matmul in `dtype`: the ceiling the training loop is compared with."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


# -- core, as a user runs it ---------------------------------------------------------------------------
def cli_train(home: Path, *flags: str) -> dict:
    """`digit-lab train ... --json` in a fresh process; its one JSON line."""
    out = subprocess.run([sys.executable, "-m", "core.cli", "train", *flags, "--json"], cwd=REPO, check=True,
                         env={**os.environ, "DIGIT_LAB_HOME": str(home)}, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def recipe_process(seed: int, tuned: bool = False) -> dict:
    """The recipe as the plain script it is: a fresh Python process (so it pays the same cold start as the CLI).
    `tuned`: with core's settings (see public_recipe), to show what they alone are worth."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--recipe-seed", str(seed),
                          *(["--recipe-tuned"] if tuned else [])], cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to_99(seeds: list[int], home: Path) -> dict:
    rows = []
    for seed in seeds:  # alternating: whatever else loads the machine falls on both
        ours = cli_train(home, "--preset", "fast", "--seed", str(seed))
        ref = recipe_process(seed)
        tuned = recipe_process(seed, tuned=True)
        rows.append({"seed": seed, "fast_seconds": ours["train_seconds"], "fast_accuracy": ours["test_accuracy"],
                     "fast_precision": ours.get("precision"),
                     "recipe_seconds": ref["train_seconds"], "recipe_accuracy": ref["test_accuracy"],
                     "recipe_tuned_seconds": tuned["train_seconds"]})
        print(f"seed {seed}: fast {ours['train_seconds']:.1f} s {ours['test_accuracy']:.2%} · "
              f"recipe {ref['train_seconds']:.1f} s {ref['test_accuracy']:.2%} · "
              f"recipe with core's settings {tuned['train_seconds']:.1f} s", file=sys.stderr, flush=True)
    fast = statistics.median(r["fast_seconds"] for r in rows)
    recipe = statistics.median(r["recipe_seconds"] for r in rows)
    return {"rows": rows, "fast_median_seconds": fast, "recipe_median_seconds": recipe, "ratio": fast / recipe,
            "recipe_tuned_median_seconds": statistics.median(r["recipe_tuned_seconds"] for r in rows),
            "all_fast_seeds_reach_99": all(r["fast_accuracy"] >= 0.99 for r in rows),
            "target": "every fast seed >= 99.0% and median <= 0.8x the recipe"}


def throughput(home: Path) -> dict:
    ours = cli_train(home, "--preset", "seed-cnn", "--epochs", "1")
    plain = plain_loop()
    images = 60_000  # the preset trains on train + validation: 60,000 images an epoch
    flops = train_flops("seed-cnn", images)
    achieved = flops / (images / ours["images_per_second"]) / 1e9
    precision = ours.get("precision") or "fp32"
    peak = matmul_gflops(dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    return {"core_images_per_second": ours["images_per_second"], "plain_images_per_second": plain["images_per_second"],
            "core_precision": precision,
            "ratio": ours["images_per_second"] / plain["images_per_second"], "target": ">= 1.5x the plain loop",
            "train_gflops_per_second": round(achieved, 2), "matmul_gflops_per_second": round(peak, 2),
            "share_of_matmul": achieved / peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["all", "time-to-99", "throughput"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe-seed", type=int, help=argparse.SUPPRESS)  # one recipe run; prints its JSON
    parser.add_argument("--recipe-tuned", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recipe_seed is not None:
        print(json.dumps(public_recipe(args.recipe_seed, args.recipe_tuned)))
        return 0
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["machine"] = {"cpu": cpu_model(), "cores": usable_cores(), "fast_precision": fast_precision(),
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "fast_model": ZOO[TrainConfig.from_preset("fast").model].title}
    with tempfile.TemporaryDirectory() as home:
        if args.part in ("all", "time-to-99"):
            results["time_to_99"] = time_to_99(args.seeds, Path(home))
        if args.part in ("all", "throughput"):
            results["throughput"] = throughput(Path(home))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    return 0


def print_tables(results: dict) -> None:
    if "time_to_99" in results:
        t = results["time_to_99"]
        print("| seed | `fast` (core) | public recipe (plain script) | the recipe with core's settings |\n"
              "|---|---|---|---|")
        for r in t["rows"]:
            print(f"| {r['seed']} | {r['fast_seconds']:.1f} s, {r['fast_accuracy']:.2%} | "
                  f"{r['recipe_seconds']:.1f} s, {r['recipe_accuracy']:.2%} | {r.get('recipe_tuned_seconds', 0):.1f} s |")
        print(f"| median | **{t['fast_median_seconds']:.1f} s** | {t['recipe_median_seconds']:.1f} s | "
              f"{t.get('recipe_tuned_median_seconds', 0):.1f} s |")
        print(f"\nratio {t['ratio']:.2f}× (target ≤ 0.8×); every fast seed ≥ 99%: {t['all_fast_seeds_reach_99']}\n")
    if "throughput" in results:
        t = results["throughput"]
        print("| loop | images/s |\n|---|---|")
        print(f"| `core`, seed-cnn preset, 1 epoch ({t.get('core_precision', 'fp32')}) | "
              f"**{t['core_images_per_second']:,.0f}** |")
        print(f"| plain PyTorch loop (DataLoader + ToTensor, batch 64) | {t['plain_images_per_second']:,.0f} |")
        print(f"\nratio {t['ratio']:.2f}× (target ≥ 1.5×); training at {t['train_gflops_per_second']:.1f} GFLOP/s, "
              f"{t['share_of_matmul']:.0%} of a 2048² {t.get('core_precision', 'fp32')} matmul's "
              f"{t['matmul_gflops_per_second']:.1f} GFLOP/s")


if __name__ == "__main__":
    raise SystemExit(main())

"""One-shot device check: train on CUDA with the data resident on the GPU, fp32 then bf16, and time it.

    python benchmarks/gpu_check.py [--presets fast best] [--out results.json]
Prints one JSON object (device name, per preset and precision: images/s, train seconds, test accuracy)
with the same presets timed on this machine's CPU for a short slice as the in-run reference. Each CUDA run
follows a 20-step warm-up of the same settings, which is not timed. Falls back
to CPU only (and says so) when no GPU is present, so it can be smoke-tested anywhere.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import TrainConfig  # noqa: E402
from core.data.datasets import load_splits  # noqa: E402
from core.inference.metrics import evaluate  # noqa: E402
from core.training.train import pick_device, read_back_every, resolve_precision, train  # noqa: E402


def timed(cfg: TrainConfig, device: torch.device) -> dict:
    splits = load_splits(cfg.dataset, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outcome = train(cfg, splits, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()  # a CPU-GPU sync point: the timing must include queued kernels
    seconds = time.perf_counter() - start
    test = evaluate(outcome.model, splits.test_x, splits.test_y)
    return {"status": outcome.status, "steps": outcome.state.step, "seconds": round(seconds, 2),
            "images_per_second": round(outcome.state.images / seconds, 1), "test_accuracy": round(test.accuracy, 4),
            "data_on": str(splits.train_x.device), "precision": resolve_precision(cfg, device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["fast", "best"])
    parser.add_argument("--cpu-steps", type=int, default=60, help="steps of each preset timed on CPU as reference")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = pick_device("auto")
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (no GPU found)",
              "torch": torch.__version__, "figures_read_back_every_steps": read_back_every(device), "runs": {}}
    for preset in args.presets:
        base = TrainConfig.from_preset(preset)
        report["runs"][f"{preset}/cpu-reference"] = timed(base.replace(device="cpu", max_steps=args.cpu_steps),
                                                          torch.device("cpu"))
        if device.type == "cuda":
            for precision in ("fp32", "bf16"):
                cfg = base.replace(device="cuda", precision=precision)
                timed(cfg.replace(max_steps=20), device)  # warm-up: CUDA context, cuDNN's choice of kernels
                report["runs"][f"{preset}/cuda-{precision}"] = timed(cfg, device)
        print(json.dumps(report["runs"], indent=1), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Explanation cost on CPU for the seed CNN: SHAP, LIME, captum, global importance, vs one forward+backward.

    python benchmarks/explain.py [WEIGHTS.safetensors] [--steps 150] [--global-images 1000] [--threads N]
Without weights, seed-cnn is trained briefly on the built-in digits. Each figure is a median over a few
fresh images (no cache hits), printed with its ratio to one plain forward+backward of one image.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.training.config import TrainConfig  # noqa: E402
from core.data.datasets import is_available, load_splits, to_float  # noqa: E402
from core.insight.explain import Explainer  # noqa: E402
from core.training.train import train  # noqa: E402
from core.insight.trust import additivity  # noqa: E402


def brief_training(steps: int) -> torch.nn.Module:
    """seed-cnn after `steps` Adam steps on the built-in digits, through the project's own loop."""
    cfg = TrainConfig(model="seed-cnn", dataset="digits", lr=3e-3, batch_size=64, epochs=10_000, max_steps=steps)
    return train(cfg, load_splits("digits")).model.eval()


def median_seconds(fn: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="?", help="a weights file for seed-cnn (default: train briefly on digits)")
    parser.add_argument("--steps", type=int, default=150, help="training steps on digits when no weights are given")
    parser.add_argument("--background", type=int, default=100)
    parser.add_argument("--global-images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    if args.weights:
        from core.inference.weights import load_model

        model = load_model(Path(args.weights))
    else:
        model = brief_training(args.steps)
    dataset = "mnist" if is_available("mnist") else "digits"
    home = dataset if args.weights else "digits"  # explain images like those the model was trained on
    explainer = Explainer(model, "seed-cnn", dataset=home, background_size=args.background)
    images = load_splits(home).test_x[:20]
    splits = load_splits(dataset)
    print(f"seed-cnn ({'weights ' + args.weights if args.weights else f'{args.steps} steps on digits'}), "
          f"background {args.background} from {home}, global importance on {dataset}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")

    x = to_float(images[:1]).requires_grad_()

    def forward_backward(_: int) -> None:
        (grad,) = torch.autograd.grad(model(x)[0].sum(), x)

    for _ in range(20):  # warm-up
        forward_backward(0)
    ref = median_seconds(forward_backward, 50)
    print(f"{'reference: one forward+backward, 1 image':46s} {ref * 1000:9.2f} ms")

    def show(label: str, seconds: float, note: str = "") -> None:
        print(f"{label:46s} {seconds * 1000:9.1f} ms  {seconds / ref:9.0f}x  {note}")

    explainer.shap(images[19], "gradient")  # builds the shap explainer objects outside the timing
    explainer.shap(images[19], "deep")
    for nsamples in (explainer.nsamples, 200):
        secs = median_seconds(lambda i: explainer.shap(images[i], "gradient", nsamples=nsamples), args.repeats)
        err = additivity(explainer.shap(images[0], "gradient", nsamples=nsamples)).relative_error
        show(f"SHAP gradient, 10 classes, nsamples {nsamples}", secs, f"additivity error {err:.1%}")
    secs = median_seconds(lambda i: explainer.shap(images[i], "deep"), max(1, args.repeats - 1))
    err = additivity(explainer.shap(images[0], "deep")).max_abs_error
    show("SHAP deep, 10 classes", secs, f"additivity error {err:.1e} (logits)")
    lime_result = explainer.lime(images[19])
    secs = median_seconds(lambda i: explainer.lime(images[i], num_samples=1000), args.repeats)
    show("LIME, 1000 samples", secs, f"{lime_result.n_segments} segments")
    secs = median_seconds(lambda i: explainer.integrated_gradients(images[i]), args.repeats)
    delta = explainer.integrated_gradients(images[0]).convergence_delta
    show("captum integrated gradients, 64 steps", secs, f"convergence delta {delta:.1e}")
    secs = median_seconds(lambda i: explainer.occlusion(images[i]), args.repeats)
    show("captum occlusion, 4×4 windows, stride 2", secs)

    n = args.global_images
    many = splits.test_x.repeat((n + len(splits.test_x) - 1) // len(splits.test_x), 1, 1)[:n]
    labels = splits.test_y.repeat((n + len(splits.test_y) - 1) // len(splits.test_y))[:n]
    for method in ("gradient", "input-x-gradient"):
        with tqdm(total=n, desc=f"global {method}", unit="img", leave=False) as bar:
            result = explainer.global_importance(many, labels, method, progress=lambda d, t: bar.update(d - bar.n))
        show(f"global importance, {n} images, {method}", result.seconds, "(16 background draws per image)"
             if method == "gradient" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())

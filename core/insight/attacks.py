"""Adversarial examples (FGSM, PGD under L∞) and everyday corruptions of a drawing, and accuracy under both.

`robustness_curve(model, test_x, test_y, [0.05, 0.1, 0.3], attack="pgd", progress=cb)` gives accuracy against ε;
`corruption_table(model, test_x, test_y)` gives accuracy per corruption and severity. Attacks work on floats in
the model's input space [0, 1] (normalisation is inside the `Classifier`); `pgd(model, x, y, eps=0.3)` returns the
adversarial batch. Models are attacked in eval mode and handed back in the mode they came in, with no hooks and
no parameter gradients left behind (only the input's gradient is taken).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.data.datasets import to_float
from core.errors import DigitLabError

ATTACKS = ("fgsm", "pgd")
CORRUPTIONS = ("noise", "blur", "thicker", "thinner", "shift", "rotation", "scale")
# One parameter per corruption and severity 1..5: noise σ (pixel units), blur σ (px), thicker/thinner
# (fraction of a one-pixel dilation/erosion, >1 repeats it), shift (px), rotation (degrees), scale (zoom factor).
SEVERITY_PARAMS: dict[str, tuple[float, ...]] = {
    "noise": (0.1, 0.2, 0.3, 0.45, 0.6),
    "blur": (0.5, 0.75, 1.0, 1.5, 2.0),
    "thicker": (0.5, 1.0, 1.5, 2.0, 3.0),
    "thinner": (0.25, 0.5, 0.75, 1.0, 1.5),
    "shift": (1.0, 2.0, 3.0, 4.0, 6.0),
    "rotation": (10.0, 20.0, 30.0, 45.0, 60.0),
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),
}
Progress = Callable[[int, int], None]  # (done, total) in images


@dataclass(frozen=True)
class AttackSettings:
    """One L∞ attack: FGSM is one step of size `step` (default ε); PGD takes `steps` steps of `step`."""

    attack: str = "pgd"  # fgsm | pgd
    eps: float = 0.1  # L∞ radius, in pixel units of [0, 1]
    steps: int = 40  # PGD iterations (FGSM: 1)
    step: float | None = None  # step size; None = ε for FGSM, 2.5·ε/steps for PGD (Madry et al.)
    random_start: bool | None = None  # start uniformly in the ε-ball; None = yes for PGD, no for FGSM

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise DigitLabError(f"The attack must be one of {', '.join(ATTACKS)} (got {self.attack!r}).")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and 0 <= self.eps <= 1):
            raise DigitLabError(f"The attack's ε must be a number from 0 to 1 in pixel units (got {self.eps!r}).")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 10_000):
            raise DigitLabError(f"The attack's steps must be a whole number from 1 to 10,000 (got {self.steps!r}).")
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise DigitLabError(f"The attack's step size must be a positive number (got {self.step!r}).")

    @property
    def step_size(self) -> float:
        if self.step is not None:
            return self.step
        return self.eps if self.attack == "fgsm" else 2.5 * self.eps / self.steps

    @property
    def starts_random(self) -> bool:
        return self.attack == "pgd" if self.random_start is None else self.random_start


@dataclass(frozen=True)
class AttackResult:
    """Accuracy on the same images before and after one attack."""

    attack: str
    eps: float
    steps: int
    n: int
    clean_accuracy: float
    adversarial_accuracy: float


@dataclass(frozen=True)
class RobustnessCurve:
    """Accuracy against ε for one attack (ε = 0 is the clean accuracy)."""

    attack: str
    steps: int
    n: int
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]


@dataclass(frozen=True)
class CorruptionRow:
    corruption: str  # a name from CORRUPTIONS
    severity: int  # 1..5
    parameter: float  # the corruption's strength, see SEVERITY_PARAMS
    accuracy: float


@dataclass(frozen=True)
class CorruptionTable:
    """Accuracy per corruption and severity, with the clean accuracy on the same images."""

    n: int
    seed: int
    clean_accuracy: float
    rows: tuple[CorruptionRow, ...]

    def accuracy(self, corruption: str, severity: int) -> float:
        """The accuracy for one cell of the table."""
        return next(r.accuracy for r in self.rows if r.corruption == corruption and r.severity == severity)


# -- attacks on one batch -------------------------------------------------------------------------
def perturb(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, settings: AttackSettings, *,
            generator: torch.Generator | None = None, eval_mode: bool = True) -> torch.Tensor:
    """The adversarial batch for float images `x` (N, 1, 28, 28) in [0, 1]: within ε of `x` (L∞) and in [0, 1].

    `eval_mode=False` attacks the model in its current mode (adversarial training builds batches that way).
    """
    eps, step = float(settings.eps), settings.step_size
    x = x.detach()
    if eps == 0:
        return x.clone()
    steps = 1 if settings.attack == "fgsm" else settings.steps
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        delta = torch.zeros_like(x)
        if settings.starts_random:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) if generator is not None \
                else torch.rand_like(x)
            delta = (noise * 2 - 1) * eps
            delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(x + delta).float(), y)
                # Only the input's gradient: parameters' .grad stay untouched (no accumulation, no hooks).
                (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x  # stay a valid image
        return (x + delta).detach()
    finally:
        model.train(was_training)


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, step: float | None = None,
         random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al.); with `random_start` it is Wong et al.'s FGSM-RS."""
    return perturb(model, x, y, AttackSettings("fgsm", eps, 1, step, random_start), generator=generator)


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 40,
        step: float | None = None, random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent under L∞ (Madry et al.): `steps` signed-gradient steps, projected on the ε-ball."""
    return perturb(model, x, y, AttackSettings("pgd", eps, steps, step, random_start), generator=generator)


# -- accuracy under attack ------------------------------------------------------------------------
@dataclass(frozen=True)
class OneAttack:
    """One image before and after an attack, with the model's probabilities for both."""

    image: np.ndarray  # (28, 28) float32 in [0, 1]
    adversarial: np.ndarray  # (28, 28) float32 in [0, 1], within ε of `image`
    probs: np.ndarray  # (10,) before
    adversarial_probs: np.ndarray  # (10,) after

    @property
    def perturbation(self) -> np.ndarray:
        return self.adversarial - self.image


def attack_image(model: torch.nn.Module, image: np.ndarray, label: int | None, settings: AttackSettings,
                 seed: int = 0) -> OneAttack:
    """Attack one 28×28 image (floats in [0, 1]) against `label`, or against the model's own answer when None."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).reshape(1, 1, 28, 28)
    with torch.no_grad():
        before = torch.softmax(model(x.to(_device_of(model))).float(), 1)[0].cpu()
    target = int(before.argmax()) if label is None else int(label)
    adversarial = perturb(model, x, torch.tensor([target]), settings, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        after = torch.softmax(model(adversarial.to(_device_of(model))).float(), 1)[0].cpu()
    return OneAttack(x[0, 0].numpy(), adversarial[0, 0].cpu().numpy(), before.numpy(), after.numpy())


def adversarial_accuracy(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor,
                         settings: AttackSettings, *, batch_size: int = 500, seed: int = 0,
                         progress: Progress | None = None) -> AttackResult:
    """Clean and adversarial accuracy of `model` on uint8 images (N, 28, 28) under one attack."""
    device = _device_of(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    n, clean, robust = len(labels), 0, 0
    for start in range(0, n, batch_size):
        x = to_float(images_u8[start:start + batch_size].to(device))
        y = labels[start:start + batch_size].to(device)
        clean += _correct(model, x, y)
        robust += _correct(model, perturb(model, x, y, settings, generator=gen), y)
        if progress:
            progress(min(start + batch_size, n), n)
    return AttackResult(settings.attack, float(settings.eps), settings.steps if settings.attack == "pgd" else 1,
                        n, clean / max(n, 1), robust / max(n, 1))


def robustness_curve(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor,
                     eps_values: tuple[float, ...] | list[float], *, attack: str = "pgd", steps: int = 40,
                     batch_size: int = 500, seed: int = 0, progress: Progress | None = None) -> RobustnessCurve:
    """Accuracy against ε on the given images; `progress(done, total)` counts images over all ε values."""
    eps_values = tuple(float(e) for e in eps_values)
    if not eps_values:
        raise DigitLabError("Give at least one ε for the robustness curve.")
    n = len(labels)
    accuracy = []
    for i, eps in enumerate(eps_values):
        step_progress = (lambda done, _total, i=i: progress(i * n + done, n * len(eps_values))) if progress else None
        result = adversarial_accuracy(model, images_u8, labels, AttackSettings(attack, eps, steps),
                                      batch_size=batch_size, seed=seed, progress=step_progress)
        accuracy.append(result.adversarial_accuracy)
    return RobustnessCurve(attack, steps if attack == "pgd" else 1, n, eps_values, tuple(accuracy))


# -- corruptions ------------------------------------------------------------------------------------
def corrupt(x: torch.Tensor, corruption: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Float images (N, 1, 28, 28) in [0, 1] after one corruption at severity 1..5 (random parts from `generator`)."""
    if corruption not in SEVERITY_PARAMS:
        raise DigitLabError(f"Unknown corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}.")
    if not (isinstance(severity, int) and 1 <= severity <= 5):
        raise DigitLabError(f"Severity must be a whole number from 1 to 5 (got {severity!r}).")
    p = SEVERITY_PARAMS[corruption][severity - 1]
    n = x.shape[0]
    if corruption == "noise":
        return (x + p * torch.randn(x.shape, generator=generator, device=x.device)).clamp(0, 1)
    if corruption == "blur":
        return _gaussian_blur(x, p)
    if corruption in ("thicker", "thinner"):
        return _stroke(x, p if corruption == "thicker" else -p)
    sign = torch.where(torch.rand(n, generator=generator, device=x.device) < 0.5, -1.0, 1.0)
    angle, zoom = torch.zeros(n, device=x.device), torch.ones(n, device=x.device)
    shift_x, shift_y = torch.zeros(n, device=x.device), torch.zeros(n, device=x.device)
    if corruption == "shift":  # p pixels in a random direction
        theta = torch.rand(n, generator=generator, device=x.device) * 2 * math.pi
        shift_x, shift_y = p * torch.cos(theta) * (2 / 28), p * torch.sin(theta) * (2 / 28)
    elif corruption == "rotation":
        angle = sign * p * math.pi / 180
    else:  # scale: shrink to p of the size
        zoom = torch.full((n,), p, device=x.device)
    return _affine(x, angle, zoom, shift_x, shift_y)


def corruption_table(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor,
                     severities: tuple[int, ...] | list[int] = (1, 2, 3, 4, 5), *,
                     corruptions: tuple[str, ...] | list[str] = CORRUPTIONS, seed: int = 0,
                     batch_size: int = 1000, progress: Progress | None = None) -> CorruptionTable:
    """Accuracy per corruption and severity on uint8 images (N, 28, 28); the same for the same seed."""
    device = _device_of(model)
    n = len(labels)
    x_all = to_float(images_u8.to(device))
    y_all = labels.to(device)
    clean = sum(_correct(model, x_all[i:i + batch_size], y_all[i:i + batch_size]) for i in range(0, n, batch_size))
    rows, cells = [], [(c, s) for c in corruptions for s in severities]
    for done, (name, severity) in enumerate(cells, 1):
        gen = torch.Generator(device=device).manual_seed(seed * 1_000 + CORRUPTIONS.index(name) * 10 + severity
                                                         if name in CORRUPTIONS else seed)
        correct = 0
        for i in range(0, n, batch_size):
            x = corrupt(x_all[i:i + batch_size], name, severity, gen)
            correct += _correct(model, x, y_all[i:i + batch_size])
        rows.append(CorruptionRow(name, severity, SEVERITY_PARAMS[name][severity - 1], correct / max(n, 1)))
        if progress:
            progress(done, len(cells))
    return CorruptionTable(n, seed, clean / max(n, 1), tuple(rows))


# -- helpers ----------------------------------------------------------------------------------------
@torch.no_grad()
def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        return int((model(x).argmax(1) == y).sum())
    finally:
        model.train(was_training)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(out, (0, 0, radius, radius)), k.view(1, 1, -1, 1))


def _stroke(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Thicken (amount > 0) or thin (< 0) strokes: whole one-pixel cross dilations/erosions, then a fraction."""
    whole, part = divmod(abs(amount), 1.0)
    for _ in range(int(whole)):
        x = _cross(x, amount > 0)
    if part:
        x = x + part * (_cross(x, amount > 0) - x)
    return x.clamp(0, 1)


def _cross(x: torch.Tensor, dilate: bool) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1))
    shifts = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                          padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
    return shifts.max(0).values if dilate else shifts.min(0).values


def _affine(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift_x: torch.Tensor,
            shift_y: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the sampling grid is the inverse transform
    theta = torch.stack([torch.stack([cos, -sin, -shift_x / zoom], 1), torch.stack([sin, cos, -shift_y / zoom], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

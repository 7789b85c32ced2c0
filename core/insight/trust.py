"""Numbers that say whether an explanation is true: additivity, deletion curves, randomised-model checks.

`additivity(explainer.shap(img))`, `deletion_curve(explainer, img, attribution_map)` (against deleting the ink
at random and brightest first) and `randomisation_check(explainer, img, "gradient")`; each returns a small
dataclass of numpy arrays.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from core.errors import ExplanationError
from core.insight.explain import Attribution, Explainer, as_image, readonly
from core.models.zoo import ResidualBlock


@dataclass(frozen=True)
class Additivity:
    """How far attributions are from adding up to output - base value (exact for DeepLIFT, sampled for gradient)."""

    method: str
    output: str  # units of everything below ("logit" for SHAP and integrated gradients)
    classes: tuple[int, ...]
    attribution_sums: np.ndarray  # (K,) sum of each class's map
    differences: np.ndarray  # (K,) output - base value: what the sums should equal
    abs_errors: np.ndarray  # (K,) |sum - difference|
    max_abs_error: float
    relative_error: float  # max_abs_error / max |difference| over the classes


@dataclass(frozen=True)
class DeletionCurve:
    """p(class) as the ink is set to black, most-attributed pixels first; lower area = more faithful.

    The x-axis is the fraction of the ink (pixels > 0) deleted: a black pixel is already "deleted", so
    deleting it tests nothing, and counting it (784 pixels, ~80% black in MNIST) would make any ink-first
    order look good and squeeze the curve into its first fifth. Every order deletes only ink, ranked its
    own way, so a map is judged on how it ranks the ink; at 1 the image is black for all of them.
    """

    cls: int
    fractions: np.ndarray  # (steps + 1,) fraction of the image's ink pixels deleted, 0..1
    probs: np.ndarray  # (steps + 1,) p(cls) deleting ink in order of decreasing attribution
    random_probs: np.ndarray  # (steps + 1,) p(cls) deleting ink in random order (mean over repeats)
    intensity_probs: np.ndarray  # (steps + 1,) p(cls) deleting the brightest ink first (a map-free guess)
    auc: float  # area under `probs`
    random_auc: float  # area under `random_probs`; a faithful map has auc well below this
    intensity_auc: float  # area under `intensity_probs`; a map worth showing beats this too


@dataclass(frozen=True)
class RandomisationCheck:
    """Adebayo et al.: maps from a model with random weights should not resemble the trained model's."""

    method: str
    cls: int
    spearman: float  # rank correlation of the signed maps (original vs fully randomised); near 0 is good
    # The same on |attribution|, over pixels where either map is non-zero. Expect it higher (≈0.6 for a
    # trained CNN): SHAP/IG maps scale with the input itself, so magnitudes keep the digit's shape.
    spearman_abs: float
    original: np.ndarray  # (28, 28)
    randomised: np.ndarray  # (28, 28)
    cascade: tuple[tuple[str, float], ...]  # (layer, signed spearman) randomising from the output layer down


def additivity(attribution: Attribution) -> Additivity:
    """Compare each class's attribution sum with output - base value (SHAP, integrated gradients)."""
    if attribution.base_values is None:
        raise ExplanationError(f"{attribution.method} has no reference output, so additivity does not apply.")
    sums = attribution.values.reshape(len(attribution.classes), -1).sum(1).astype(np.float64)
    diffs = attribution.outputs[list(attribution.classes)].astype(np.float64) - attribution.base_values
    errors = np.abs(sums - diffs)
    return Additivity(attribution.method, attribution.output, attribution.classes, readonly(sums), readonly(diffs),
                      readonly(errors), float(errors.max()), float(errors.max() / max(np.abs(diffs).max(), 1e-12)))


def deletion_curve(explainer: Explainer, image: object, attribution_map: np.ndarray, cls: int | None = None, *,
                   steps: int = 20, random_repeats: int = 5, seed: int = 0) -> DeletionCurve:
    """Delete (set to 0) the ink by decreasing attribution in `steps` steps and record p(cls); plus baselines.

    Baselines: the ink in random order (mean of `random_repeats`) and the brightest ink first.
    """
    x = as_image(image)[0, 0]
    scores = np.asarray(attribution_map, dtype=np.float64).reshape(-1)
    if scores.shape != (784,):
        raise ExplanationError(f"The attribution map must be 28×28, got {np.shape(attribution_map)}.")
    pixels = x.reshape(-1).double().numpy()
    ink = int((pixels > 0).sum())
    if ink == 0:
        raise ExplanationError("The image is all black: there is no ink to delete.")
    cls = int(explainer.probabilities(x[None, None])[0].argmax()) if cls is None else int(cls)
    rng = np.random.default_rng(seed)
    orders = ([ink_order(pixels, -scores), ink_order(pixels, -pixels)]
              + [ink_order(pixels, rng.random(784)) for _ in range(random_repeats)])
    counts = np.round(np.linspace(0, ink, steps + 1)).astype(int)
    batch = []
    for order in orders:  # every curve point of every order goes through the model in one batch
        rank = np.empty(784, dtype=np.int64)
        rank[order] = np.arange(784)
        keep = torch.from_numpy(rank[None, :] >= counts[:, None]).float().view(-1, 28, 28)
        batch.append(x[None] * keep)
    probs = explainer.probabilities(torch.cat(batch)[:, None])[:, cls].view(len(orders), steps + 1).double().numpy()
    fractions = counts / float(ink)
    random_probs = probs[2:].mean(0)
    return DeletionCurve(cls, readonly(fractions), readonly(probs[0]), readonly(random_probs), readonly(probs[1]),
                         _area(fractions, probs[0]), _area(fractions, random_probs), _area(fractions, probs[1]))


def ink_order(pixels: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Indices of the 784 pixels to delete in turn: the ink (> 0) by increasing `key`, then the black pixels."""
    pixels, key = np.asarray(pixels).reshape(-1), np.asarray(key).reshape(-1)
    ink = np.flatnonzero(pixels > 0)
    return np.concatenate([ink[np.argsort(key[ink], kind="stable")], np.flatnonzero(pixels <= 0)])


def randomisation_check(explainer: Explainer, image: object, method: str = "gradient", cls: int | None = None, *,
                        cascade: bool = False, seed: int = 0) -> RandomisationCheck:
    """Recompute `method`'s map on a copy of the model with re-initialised weights; report rank correlations.

    Costs one explanation more (for the randomised model); with `cascade`, one more per layer instead.
    """
    x = as_image(image)
    cls = int(explainer.probabilities(x)[0].argmax()) if cls is None else int(cls)
    original = explainer.pixel_map(x, method, cls)
    model = copy.deepcopy(explainer.model)
    steps: list[tuple[str, float]] = []
    partly: Explainer | None = None
    for i, (name, whole) in enumerate(reversed(_layers(model))):  # top (logits) first, as in Adebayo et al.
        _reinit(model.get_submodule(name), seed + i, whole)
        if cascade:
            partly = explainer.with_model(model)  # copies the model: later re-initialisations do not reach it
            steps.append((name, _spearman(original, partly.pixel_map(x, method, cls), False)))
    randomised = (partly or explainer.with_model(model)).pixel_map(x, method, cls)  # cascading: a cache hit
    return RandomisationCheck(method, cls, _spearman(original, randomised, False),
                              _spearman(original, randomised, True), readonly(original), readonly(randomised),
                              tuple(steps))


def _layers(model: nn.Module) -> list[tuple[str, bool]]:
    """The units a cascade randomises, in forward order, as (module name, whole subtree?).

    Modules owning weights count alone; residual and transformer blocks count as one unit each.
    """
    blocks = (ResidualBlock, nn.TransformerEncoderLayer)
    units: list[tuple[str, bool]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(b + ".") for b in inside):
            continue
        if isinstance(module, blocks):
            inside.append(name)
            units.append((name, True))
        elif any(True for _ in module.parameters(recurse=False)):
            units.append((name, False))
    return units


def _reinit(module: nn.Module, seed: int, recurse: bool) -> None:
    """Fresh random weights (Glorot-uniform matrices, zero biases, unit norm scales) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters(recurse=recurse):
            if p.dim() >= 2:
                nn.init.xavier_uniform_(p, generator=gen)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers(recurse=recurse):  # batch-norm statistics back to their initial values
            if name.endswith("running_mean"):
                b.zero_()
            elif name.endswith("running_var"):
                b.fill_(1.0)


def _spearman(a: np.ndarray, b: np.ndarray, absolute: bool) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if absolute:  # only where either map says something: thousands of tied zeros would inflate the ranks
        a, b = np.abs(a), np.abs(b)
        support = (a > 1e-6 * a.max()) | (b > 1e-6 * b.max())
        a, b = a[support], b[support]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:  # a constant map has no ranking: call it uncorrelated
        return 0.0
    return float(spearmanr(a, b).statistic)


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)

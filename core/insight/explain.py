"""Why a model said what it said: SHAP, LIME and captum attributions for one image, importance for many.

`ex = Explainer(model, "seed-cnn")` copies the model once (the original is never touched) and caches;
then `ex.shap(img)`, `ex.lime(img)`, `ex.integrated_gradients(img)`, `ex.occlusion(img)`, `ex.global_importance(xs)`.
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.data.datasets import unit
from core.errors import ExplanationError
from core.models.zoo import ZOO
from core.insight.superpixels import LimeResult, lime_superpixels, readonly

METHODS = ("gradient", "deep", "lime", "integrated-gradients", "occlusion")  # pixel_map() names
GLOBAL_METHODS = ("gradient", "input-x-gradient")
Progress = Callable[[int, int], None]



@dataclass(frozen=True)
class Attribution:
    """Per-pixel attributions of one image for some classes, in the units named by `output`."""

    method: str  # shap-gradient | shap-deep | integrated-gradients | occlusion
    output: str  # "logit": values add up to outputs - base_values; "probability": drop in p(class)
    classes: tuple[int, ...]  # the class of each row of `values`
    values: np.ndarray  # (len(classes), 28, 28)
    image: np.ndarray  # (28, 28) float in [0, 1], as explained
    outputs: np.ndarray  # (10,) the model's output for the image, in `output` units
    probs: np.ndarray  # (10,) softmax probabilities
    base_values: np.ndarray | None  # (len(classes),) output at the reference (SHAP: mean over background)
    seconds: float
    convergence_delta: float | None = None  # integrated gradients: sum(values) - (f(x) - f(black))

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))

    def of(self, cls: int | None = None) -> np.ndarray:
        """The (28, 28) map for class `cls` (default: the predicted class)."""
        cls = self.predicted if cls is None else int(cls)
        if cls not in self.classes:
            raise ExplanationError(f"This {self.method} explanation covers classes {list(self.classes)}, not {cls}.")
        return self.values[self.classes.index(cls)]


@dataclass(frozen=True)
class GlobalImportance:
    """Mean |attribution| per pixel over many images: overall and per class (images of that class)."""

    method: str  # gradient (expected gradients = SHAP GradientExplainer's estimator) | input-x-gradient
    output: str  # "logit"
    overall: np.ndarray  # (28, 28)
    per_class: np.ndarray  # (10, 28, 28); zeros for a class with no images
    counts: np.ndarray  # (10,) images per class
    n: int
    class_source: str  # "label" (the given labels) or "prediction" (no labels given)
    seconds: float


class Explainer:
    """Attributions for one model, computed on a private eval-mode copy and cached; thread-safe."""

    def __init__(self, model: nn.Module, model_name: str, background: torch.Tensor | np.ndarray | None = None, *,
                 dataset: str = "mnist", background_size: int = 100, seed: int = 0, nsamples: int = 100,
                 explainers: tuple[str, ...] | None = None, cache_size: int = 64) -> None:
        if explainers is None:
            if model_name not in ZOO:
                raise ExplanationError(f"Unknown model {model_name!r}; the zoo has: {', '.join(ZOO)}.")
            explainers = ZOO[model_name].explainers
        self.model_name, self.explainers, self.seed, self.nsamples = model_name, tuple(explainers), seed, nsamples
        # The private copy: SHAP registers hooks and sets attributes on the model it is given.
        self.model = _private_copy(model)
        if background is None:
            from core.data.datasets import load_splits

            train_x = load_splits(dataset).train_x
            pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))[:background_size]
            background = train_x[pick]
        self.background = _images(background, "background")
        if not len(self.background):
            raise ExplanationError("The background needs at least one image.")
        with torch.no_grad():
            self.expected_logits = self.model(self.background).mean(0).numpy()
        self._shap_lock = threading.Lock()  # DeepExplainer hooks its model; GradientExplainer reseeds numpy
        self._shap: dict[str, Any] = {}
        self._deep_model: nn.Module | None = None  # hooked by DeepExplainer: never used for anything else
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._computing: dict[tuple, threading.Lock] = {}  # key -> held while one caller computes it
        self._cache_size = cache_size

    def with_model(self, model: nn.Module) -> "Explainer":
        """A new Explainer for another model (e.g. a randomised copy) with this one's background and settings."""
        return Explainer(model, self.model_name, self.background, seed=self.seed, nsamples=self.nsamples,
                         explainers=self.explainers, cache_size=self._cache_size)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (N, 10) for float images (N, 1, 28, 28), from the private copy."""
        return torch.cat([F.softmax(self.model(x[i:i + 500]), 1) for i in range(0, len(x), 500)])

    # -- SHAP ------------------------------------------------------------------------------------
    def shap(self, image: Any, method: str = "gradient", nsamples: int | None = None) -> Attribution:
        """SHAP values of the logits for all 10 classes: (10, 28, 28), adding up to logits - base_values."""
        if method not in ("gradient", "deep"):
            raise ExplanationError(f"SHAP method must be 'gradient' or 'deep', not {method!r}.")
        if method not in self.explainers:
            title = ZOO[self.model_name].title if self.model_name in ZOO else self.model_name
            raise ExplanationError(
                f"SHAP's DeepExplainer does not apply to {title}: DeepLIFT has rules only for plain layers (conv, "
                f"linear, ReLU/sigmoid, pooling, batch norm), not LayerNorm, GELU or attention. "
                f"Use the {' or '.join(repr(e) for e in self.explainers)} explainer instead.")
        x = as_image(image)
        nsamples = nsamples or self.nsamples
        return self._cached(("shap", method, nsamples, _key(x)), lambda: self._shap_values(x, method, nsamples))

    def _shap_values(self, x: torch.Tensor, method: str, nsamples: int) -> Attribution:
        import shap

        start = time.perf_counter()
        with self._shap_lock, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="unrecognized nn.Module")  # our Normalize: linear, fine
            if method == "gradient":
                if "gradient" not in self._shap:
                    self._shap["gradient"] = shap.GradientExplainer(self.model, self.background)
                explainer = self._shap["gradient"]
                explainer.explainer.batch_size = nsamples  # one forward+backward per class, not 4 small ones
                state = np.random.get_state()  # shap seeds numpy's global RNG; give it back as it was
                try:
                    values = explainer.shap_values(x, nsamples=nsamples, rseed=self.seed)
                finally:
                    np.random.set_state(state)
                base = self.expected_logits
            else:
                if self._deep_model is None:
                    self._deep_model = copy.deepcopy(self.model)
                    self._shap["deep"] = shap.DeepExplainer(self._deep_model, self.background)
                explainer = self._shap["deep"]
                try:  # cost: 10 classes × one forward+backward on 2 × background images
                    values = explainer.shap_values(x, check_additivity=False)
                finally:
                    _drop_deeplift_state(self._deep_model)
                base = np.asarray(explainer.expected_value)
        values = np.moveaxis(np.asarray(values)[0, 0], -1, 0)  # (1, 1, 28, 28, 10) -> (10, 28, 28)
        return self._attribution(f"shap-{method}", tuple(range(10)), values, x, start, base)

    # -- LIME ------------------------------------------------------------------------------------
    def lime(self, image: Any, num_samples: int = 1000, *, n_segments: int = 40, batch_size: int = 500) -> LimeResult:
        """LIME on SLIC superpixels, hidden segments set to black; weights for all 10 classes' probabilities."""
        x = as_image(image)
        return self._cached(("lime", num_samples, n_segments, _key(x)),
                            lambda: lime_superpixels(self.probabilities, x, num_samples, n_segments, batch_size,
                                                     self.seed))

    # -- captum ----------------------------------------------------------------------------------
    def integrated_gradients(self, image: Any, target: int | None = None, n_steps: int = 64) -> Attribution:
        """Integrated gradients of the `target` logit (default: predicted) from a black image, with its delta."""
        x = as_image(image)
        target = self._target(x, target)
        return self._cached(("ig", target, n_steps, _key(x)), lambda: self._ig(x, target, n_steps))

    def _ig(self, x: torch.Tensor, target: int, n_steps: int) -> Attribution:
        from captum.attr import IntegratedGradients

        start = time.perf_counter()
        baseline = torch.zeros_like(x)
        attr, delta = IntegratedGradients(self.model).attribute(
            x, baselines=baseline, target=target, n_steps=n_steps, internal_batch_size=n_steps,
            return_convergence_delta=True)
        with torch.no_grad():
            base = self.model(baseline)[0, target].item()
        return self._attribution("integrated-gradients", (target,), attr[0], x, start, [base], float(delta.abs()))

    def occlusion(self, image: Any, target: int | None = None, window: int = 4, stride: int = 2) -> Attribution:
        """Occlusion: how much p(target) drops when a window × window patch is blacked out, per pixel."""
        x = as_image(image)
        target = self._target(x, target)
        return self._cached(("occ", target, window, stride, _key(x)), lambda: self._occ(x, target, window, stride))

    def _occ(self, x: torch.Tensor, target: int, window: int, stride: int) -> Attribution:
        from captum.attr import Occlusion

        start = time.perf_counter()
        attr = Occlusion(lambda inp: F.softmax(self.model(inp), 1)).attribute(
            x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), baselines=0.0,
            target=target, perturbations_per_eval=256)
        return self._attribution("occlusion", (target,), attr[0], x, start, output="probability")

    def pixel_map(self, image: Any, method: str, target: int | None = None) -> np.ndarray:
        """One (28, 28) map for class `target` (default: predicted) by any method in METHODS."""
        x = as_image(image)
        target = self._target(x, target)
        if method in ("gradient", "deep"):
            return self.shap(x, method).of(target)
        if method == "lime":
            return self.lime(x).heatmap_for(target)
        if method == "integrated-gradients":
            return self.integrated_gradients(x, target).of(target)
        if method == "occlusion":
            return self.occlusion(x, target).of(target)
        raise ExplanationError(f"Unknown explanation method {method!r}; choose one of: {', '.join(METHODS)}.")

    # -- many images -----------------------------------------------------------------------------
    def global_importance(self, images: Any, labels: Any = None, method: str = "gradient", *, progress: Progress | None
                          = None, nsamples: int = 16, batch_size: int = 32) -> GlobalImportance:
        """Mean |attribution of the labelled class's logit| per pixel, overall and per class; batched.

        "gradient" is SHAP's expected-gradients estimator (GradientExplainer) run on whole batches with
        `nsamples` background draws per image; "input-x-gradient" is one forward+backward per image.
        """
        if method not in GLOBAL_METHODS:
            raise ExplanationError(f"Global importance uses {' or '.join(GLOBAL_METHODS)}, not {method!r}.")
        x = _images(images, "images")
        y = self._classes_of(x, labels)
        return self._cached(("global", method, nsamples, _key(x), _key(y)),
                            lambda: self._global(x, y, labels is not None, method, progress, nsamples, batch_size),
                            on_hit=lambda: progress(len(x), len(x)) if progress else None)

    def _global(self, x: torch.Tensor, y: torch.Tensor, labelled: bool, method: str, progress: Progress | None,
                nsamples: int, batch_size: int) -> GlobalImportance:
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(self.seed)
        sums = torch.zeros(10, 28, 28, dtype=torch.float64)
        counts = torch.bincount(y, minlength=10)
        k = nsamples if method == "gradient" else 1
        for lo in range(0, len(x), batch_size):
            xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
            refs = (self.background[torch.randint(len(self.background), (len(xb), k), generator=gen)]
                    if method == "gradient" else torch.zeros_like(xb[:, None]))
            t = torch.rand(len(xb), k, 1, 1, 1, generator=gen) if method == "gradient" else 1.0
            delta = xb[:, None] - refs  # points on the line from a random background image to x
            points = refs + t * delta
            points = points.reshape(-1, 1, 28, 28).requires_grad_()
            chosen = self.model(points).gather(1, yb.repeat_interleave(k)[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, points)
            attr = (grad.view(len(xb), k, 1, 28, 28) * delta).mean(1)[:, 0].abs()
            sums.index_add_(0, yb, attr.double())
            if progress:
                progress(min(lo + batch_size, len(x)), len(x))
        per_class = sums / counts.clamp_min(1).view(10, 1, 1)
        overall = sums.sum(0) / max(len(x), 1)
        return GlobalImportance(method, "logit", readonly(overall), readonly(per_class), readonly(counts, np.int64),
                                len(x), "label" if labelled else "prediction", time.perf_counter() - start)

    # -- helpers ---------------------------------------------------------------------------------
    def _outputs(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits = self.model(x)[0]
        return readonly(logits), readonly(F.softmax(logits, 0))

    def _attribution(self, method: str, classes: tuple[int, ...], values: Any, x: torch.Tensor, start: float,
                     base: Any = None, delta: float | None = None, output: str = "logit") -> Attribution:
        logits, probs = self._outputs(x)
        return Attribution(method, output, classes, readonly(values), readonly(x[0, 0]),
                           probs if output == "probability" else logits, probs,
                           None if base is None else readonly(base), time.perf_counter() - start, delta)

    def _target(self, x: torch.Tensor, target: int | None) -> int:
        if target is None:
            return int(self._outputs(x)[1].argmax())
        if not 0 <= int(target) < 10:
            raise ExplanationError(f"The class to explain must be 0..9, not {target}.")
        return int(target)

    def _classes_of(self, x: torch.Tensor, labels: Any) -> torch.Tensor:
        if labels is None:
            return self.probabilities(x).argmax(1)
        y = torch.as_tensor(np.asarray(labels)).long().flatten()
        if len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise ExplanationError(f"Labels must be one class 0..9 per image: got {len(y)} labels for {len(x)} images.")
        return y

    def _cached(self, key: tuple, compute: Callable[[], Any], on_hit: Callable[[], Any] = lambda: None) -> Any:
        """`compute()` once per key: a hit is returned at once, and a caller asking for a key another caller is
        computing (the server's warm-up and a visitor, two visitors) waits for that result instead of repeating it."""
        while True:
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    break
                computing = self._computing.get(key)
                if computing is None:  # this caller computes it
                    computing = self._computing[key] = threading.Lock()
                    computing.acquire()
                    break
            with computing:  # another caller is computing it: wait, then look again
                pass
        if hit is not None:
            on_hit()
            return hit
        try:
            value = compute()  # outside the cache lock: a slow explanation must not block other keys' hits
            with self._cache_lock:
                self._cache[key] = value
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return value
        finally:
            with self._cache_lock:
                del self._computing[key]
            computing.release()


def _private_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy without parameter gradients (we only need gradients for the input)."""
    private = copy.deepcopy(model).cpu().eval()
    for p in private.parameters():
        p.requires_grad_(False)
    return private


def _drop_deeplift_state(model: nn.Module) -> None:
    """shap leaves each layer's last inputs/outputs as `x`/`y` attributes inside nested modules: drop them."""
    for module in model.modules():
        for name in ("x", "y"):
            if name in module._parameters:
                delattr(module, name)


def as_image(image: Any) -> torch.Tensor:
    """One image as float (1, 1, 28, 28) in [0, 1], from uint8 or float, numpy or torch, any leading 1s."""
    x = _images(image, "image")
    if len(x) != 1:
        raise ExplanationError(f"Expected one image, got {len(x)}.")
    return x


def _images(images: Any, what: str) -> torch.Tensor:
    t = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if t.shape[-2:] != (28, 28):
        raise ExplanationError(f"The {what} must be 28×28 pixels, got shape {tuple(t.shape)}.")
    t = t.reshape(-1, 1, 28, 28)
    if t.dtype == torch.uint8:
        return unit(t)
    t = t.float()
    if len(t) and (t.min() < -1e-3 or t.max() > 1 + 1e-3 or not torch.isfinite(t).all()):
        raise ExplanationError(f"The {what} must hold uint8 pixels or floats in [0, 1].")
    return t.clamp(0, 1)


def _key(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()

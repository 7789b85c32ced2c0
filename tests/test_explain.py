"""Explanations point at what the model really uses, leave the model alone, and are cached and thread-safe."""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import DigitLabError
from core.errors import ExplanationError
from core.insight.explain import Explainer
from core.models.zoo import build_model

BOX = np.zeros((28, 28), dtype=bool)
BOX[10:18, 4:12] = True  # the only pixels BoxModel looks at


class BoxModel(nn.Module):
    """A Classifier-compatible model whose logits depend only on the pixels inside BOX."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(BOX).float().view(1, 1, 28, 28))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in (self.net[1], self.net[3]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.5)
                layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.mask)


def noise(n: int, seed: int) -> torch.Tensor:
    """Random content everywhere: float images (n, 28, 28) in [0, 1]."""
    return torch.rand(n, 28, 28, generator=torch.Generator().manual_seed(seed))


def inside(attribution_map: np.ndarray, region: np.ndarray = BOX) -> float:
    """Fraction of the absolute attribution that falls inside `region`."""
    mass = np.abs(attribution_map)
    return float(mass[region].sum() / mass.sum())


@functools.lru_cache(maxsize=None)
def trained_cnn() -> nn.Module:
    """seed-cnn after 60 Adam steps on the built-in digits (~95% test accuracy, a few seconds)."""
    from core.training.config import TrainConfig
    from core.data.datasets import load_splits
    from core.training.train import train

    cfg = TrainConfig(model="seed-cnn", dataset="digits", lr=3e-3, batch_size=64, epochs=10, max_steps=60)
    return train(cfg, load_splits("digits")).model.eval()


@functools.lru_cache(maxsize=None)
def box_explainer() -> Explainer:
    return Explainer(BoxModel(), "box-model", noise(50, seed=1), explainers=("gradient", "deep"))


@pytest.fixture(scope="module")
def box() -> Explainer:
    return box_explainer()


# -- correctness on a model built so that only BOX matters ----------------------------------------
@pytest.mark.parametrize("method", ["gradient", "deep"])
def test_shap_puts_the_attribution_inside_the_box_for_all_classes(box, method):
    for seed in (2, 3):
        result = box.shap(noise(1, seed)[0], method)
        assert result.values.shape == (10, 28, 28) and result.base_values.shape == (10,)
        assert result.output == "logit" and result.classes == tuple(range(10))
        for cls in range(10):
            assert inside(result.of(cls)) > 0.99
        assert np.abs(result.of()[BOX]).max() > 1e-3  # and it is not all zeros


def test_integrated_gradients_stay_inside_the_box_and_converge(box):
    result = box.integrated_gradients(noise(1, 2)[0])
    assert result.values.shape == (1, 28, 28) and result.classes == (result.predicted,)
    assert inside(result.of()) > 0.99
    assert result.convergence_delta < 1e-2 * abs(result.outputs[result.predicted] - result.base_values[0])


def test_occlusion_stays_on_and_around_the_box(box):
    result = box.occlusion(noise(1, 2)[0], window=4, stride=2)
    near = np.zeros_like(BOX)
    near[7:21, 1:15] = True  # a 4-pixel window touching the box reaches 3 pixels out
    assert result.output == "probability" and result.base_values is None
    assert inside(result.of()) > 0.5 and inside(result.of(), near) > 0.99


def test_lime_weights_the_segments_that_cover_the_box(box):
    shares = []
    for seed in (2, 3, 4):
        result = box.lime(noise(1, seed)[0], num_samples=1000)
        covering = np.unique(result.segments[BOX])
        weights = np.abs(result.weights[result.label])
        others = np.delete(weights, covering)
        # LIME is a sampled fit: the ~25 segments off the box each get a small noise weight, which
        # together hold 15-30% of |weight| at 1000 samples; a covering segment's weight is far larger.
        shares.append(weights[covering].sum() / weights.sum())
        assert weights[covering].mean() > 5 * others.mean()
        assert result.top_positive[0] in covering
        assert result.num_samples == 1000 and result.segments.shape == (28, 28)
        assert result.weights.shape == (10, result.n_segments) and result.n_segments >= 15
        assert np.array_equal(result.heatmap, result.weights[result.label][result.segments])
    assert min(shares) > 0.65 and np.mean(shares) > 0.75


def test_lime_cuts_a_digit_into_superpixels_reproducibly(digits):
    image = digits.test_x[0]
    first = Explainer(trained_cnn(), "seed-cnn", digits.train_x[:20]).lime(image)
    again = Explainer(trained_cnn(), "seed-cnn", digits.train_x[:20]).lime(image)
    assert 15 <= first.n_segments <= 50
    assert set(np.unique(first.segments)) == set(range(first.n_segments))
    assert np.array_equal(first.weights, again.weights)
    assert first.label == int(first.probs.argmax()) and first.scores[first.label] > 0.3


def test_global_importance_averages_per_class_and_reports_progress(box):
    images = noise(40, seed=5)
    labels = torch.arange(40) % 4
    calls: list[tuple[int, int]] = []
    result = box.global_importance(images, labels, progress=lambda done, total: calls.append((done, total)),
                                   batch_size=16)
    assert result.overall.shape == (28, 28) and result.per_class.shape == (10, 28, 28)
    assert result.counts.tolist() == [10, 10, 10, 10, 0, 0, 0, 0, 0, 0] and result.n == 40
    assert calls == [(16, 40), (32, 40), (40, 40)]
    assert inside(result.overall) > 0.99 and np.all(result.per_class[4:] == 0)
    by_prediction = box.global_importance(images, method="input-x-gradient")
    assert by_prediction.class_source == "prediction" and inside(by_prediction.overall) > 0.99


def test_deep_shap_adds_up_on_the_shipped_resnet_with_batch_norm(digits):
    import json
    from pathlib import Path

    import core
    from core.inference.weights import load_model
    from core.insight.trust import additivity

    weights = Path(core.__file__).parent / "assets" / "starter.safetensors"
    card = json.loads(weights.with_suffix(".json").read_text())
    model = load_model(weights, card["sha256"])
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    explainer = Explainer(model, card["model"], digits.train_x[:20])
    deep = additivity(explainer.shap(digits.test_x[0], "deep"))
    assert deep.max_abs_error < 1e-3 and np.abs(deep.differences).max() > 1.0  # DeepLIFT: exact, also through BN


# -- the model is never touched; results are cached; threads are safe ------------------------------
def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules())


def test_explainer_never_changes_the_model_it_explains(digits):
    torch.manual_seed(0)
    model = build_model("seed-cnn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    image = digits.test_x[0]
    with torch.no_grad():
        expected = model.eval()(digits.test_x[:1].float().unsqueeze(1) / 255)
    model.train()
    explainer = Explainer(model, "seed-cnn", digits.train_x[:30])
    explainer.shap(image, "gradient")
    explainer.shap(image, "deep")
    explainer.lime(image, num_samples=200)
    explainer.integrated_gradients(image)
    explainer.occlusion(image)
    explainer.global_importance(digits.test_x[:8], digits.test_y[:8])
    assert model.training and _hooks(model) == 0
    assert [n for n, _ in model.named_parameters()] == names and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model.eval()(digits.test_x[:1].float().unsqueeze(1) / 255), expected)
    assert _hooks(explainer.model) == 0  # nor does the shared private copy keep any


def test_results_are_cached_and_read_only(box):
    image = noise(1, 6)[0]
    first = box.shap(image)
    assert box.shap(image.numpy()) is first  # float numpy or torch: the same image, the same entry
    assert box.shap((image * 255).round().to(torch.uint8)) is not first
    with pytest.raises(ValueError):
        first.values[0, 0, 0] = 1.0


def test_one_explanation_asked_twice_at_once_is_computed_once(monkeypatch):
    """The server's warm-up and a visitor (or two visitors) asking for the same explanation: the second waits for
    the first's result instead of computing it again."""
    explainer = Explainer(BoxModel(), "box-model", noise(20, 1), explainers=("gradient",))
    computed, started = [], threading.Event()
    shap_values = explainer._shap_values

    def slow(*args):
        computed.append(1)
        started.set()
        time.sleep(0.5)
        return shap_values(*args)

    monkeypatch.setattr(explainer, "_shap_values", slow)
    image, results = noise(1, 9)[0], []
    first = threading.Thread(target=lambda: results.append(explainer.shap(image)))
    first.start()
    started.wait(10)
    results.append(explainer.shap(image))  # asked while the first is still computing
    first.join()
    assert len(computed) == 1 and results[0] is results[1]


def test_concurrent_explanations_match_sequential_ones():
    images = noise(4, seed=7)
    sequential = Explainer(BoxModel(), "box-model", noise(50, 1), explainers=("gradient", "deep"))
    shared = Explainer(BoxModel(), "box-model", noise(50, 1), explainers=("gradient", "deep"))
    jobs = [(i, m) for i in range(4) for m in ("gradient", "deep")]
    results: dict[tuple[int, str], np.ndarray] = {}
    errors: list[BaseException] = []

    def run(i: int, method: str) -> None:
        try:
            results[i, method] = shared.shap(images[i], method).values
        except BaseException as error:  # noqa: BLE001 - surfaced by the assert below
            errors.append(error)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, method in jobs:
        np.testing.assert_allclose(results[i, method], sequential.shap(images[i], method).values, atol=1e-6)


# -- refusals a user can cause -------------------------------------------------------------------
def test_deep_explainer_is_refused_for_the_vit_with_a_clear_message(digits):
    explainer = Explainer(build_model("vit-tiny"), "vit-tiny", digits.train_x[:10])
    with pytest.raises(DigitLabError, match="DeepExplainer does not apply to Tiny ViT.*'gradient'"):
        explainer.shap(digits.test_x[0], "deep")
    assert explainer.shap(digits.test_x[0], "gradient", nsamples=8).values.shape == (10, 28, 28)


def test_default_background_is_a_fixed_sample_of_the_training_split(digits):
    model = build_model("seed-mlp")
    first = Explainer(model, "seed-mlp", dataset="digits", background_size=20)
    again = Explainer(model, "seed-mlp", dataset="digits", background_size=20)
    other = Explainer(model, "seed-mlp", dataset="digits", background_size=20, seed=1)
    assert first.background.shape == (20, 1, 28, 28) and torch.equal(first.background, again.background)
    assert not torch.equal(first.background, other.background)
    assert Explainer(model, "seed-mlp", dataset="digits").background.shape[0] == 100


@pytest.mark.parametrize("bad, words", [
    (np.zeros((27, 27), np.uint8), "28×28"),
    (np.full((28, 28), 3.0, np.float32), r"\[0, 1\]"),
])
def test_bad_images_are_refused_in_words(box, bad, words):
    with pytest.raises(ExplanationError, match=words):
        box.shap(bad)


def test_unknown_methods_and_models_are_refused_in_words(box):
    with pytest.raises(ExplanationError, match="choose one of"):
        box.pixel_map(noise(1, 2)[0], "saliency")
    with pytest.raises(ExplanationError, match="zoo has"):
        Explainer(BoxModel(), "no-such-model", noise(5, 1))

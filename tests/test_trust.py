"""The trust numbers catch unfaithful explanations: additivity, deletion curves, randomised-model checks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.errors import ExplanationError
from core.insight.explain import Explainer
from core.insight.trust import additivity, deletion_curve, ink_order, randomisation_check
from tests.test_explain import box_explainer, noise, trained_cnn


@pytest.fixture(scope="module")
def cnn(digits) -> Explainer:
    return Explainer(trained_cnn(), "seed-cnn", digits.train_x[:100])


@pytest.fixture(scope="module")
def mnist_cnn(mnist) -> Explainer:
    """seed-cnn after 80 Adam steps on MNIST (~94% test accuracy), validated on 500 images to stay quick."""
    from core.training.config import TrainConfig
    from core.data.datasets import Splits
    from core.training.train import train

    quick = Splits(mnist.info, mnist.train_x, mnist.train_y, mnist.val_x[:500], mnist.val_y[:500],
                   mnist.test_x, mnist.test_y)
    cfg = TrainConfig(model="seed-cnn", dataset="mnist", lr=3e-3, batch_size=64, epochs=1, max_steps=80, seed=0)
    return Explainer(train(cfg, quick).model.eval(), "seed-cnn", mnist.train_x[:100])


def _shuffle_all_784(explainer: Explainer, image: torch.Tensor, counts: np.ndarray, cls: int) -> np.ndarray:
    """The old random baseline: p(cls) after deleting `counts` pixels of a shuffle of all 784 (mean of 5)."""
    rng = np.random.default_rng(0)
    curves = []
    for _ in range(5):
        rank = np.empty(784, dtype=np.int64)
        rank[rng.permutation(784)] = np.arange(784)
        keep = torch.from_numpy(rank[None] >= counts[:, None]).float().view(-1, 1, 28, 28)
        curves.append(explainer.probabilities(image.view(1, 1, 28, 28) * keep)[:, cls].double().numpy())
    return np.mean(curves, axis=0)


def test_shap_and_integrated_gradients_add_up_to_the_logits_of_a_trained_cnn(cnn, digits):
    image = digits.test_x[1]
    deep = additivity(cnn.shap(image, "deep"))
    assert deep.output == "logit" and deep.attribution_sums.shape == (10,)
    assert deep.max_abs_error < 1e-3 and np.abs(deep.differences).max() > 1.0  # DeepLIFT: exact
    gradient = additivity(cnn.shap(image, "gradient"))
    assert gradient.relative_error < 0.15  # expected gradients: a 100-sample estimate (≈5-8% seen)
    ig = additivity(cnn.integrated_gradients(image))
    assert ig.relative_error < 0.02 and ig.classes == (int(cnn.shap(image).probs.argmax()),)


def test_additivity_exposes_attributions_that_do_not_add_up(cnn, digits):
    honest = cnn.shap(digits.test_x[1], "deep")
    doubled = dataclasses.replace(honest, values=honest.values * 2)
    assert additivity(doubled).relative_error > 0.5
    with pytest.raises(ExplanationError, match="additivity does not apply"):
        additivity(cnn.occlusion(digits.test_x[1]))


@pytest.mark.parametrize("method", ["gradient", "deep", "lime", "integrated-gradients", "occlusion"])
def test_deleting_by_attribution_drops_the_box_models_probability_faster_than_random(method):
    box = box_explainer()
    image = noise(1, 2)[0]
    curve = deletion_curve(box, image, box.pixel_map(image, method), steps=20)
    assert curve.fractions.shape == curve.probs.shape == curve.random_probs.shape == (21,)
    assert curve.fractions[0] == 0 and curve.fractions[-1] == 1
    start = box.probabilities(image.view(1, 1, 28, 28))[0, curve.cls].item()
    assert curve.probs[0] == pytest.approx(start, abs=1e-5) and curve.random_probs[0] == pytest.approx(start, abs=1e-5)
    assert curve.auc < 0.5 * curve.random_auc


def test_a_reversed_map_deletes_worse_than_random(cnn, digits):
    image = digits.test_x[2]
    attribution = cnn.shap(image, "gradient").of()
    faithful = deletion_curve(cnn, image, attribution)
    backwards = deletion_curve(cnn, image, -attribution)
    assert faithful.auc < faithful.random_auc < backwards.auc


def test_randomised_model_maps_do_not_resemble_the_trained_models(cnn, digits):
    image = digits.test_x[0]
    weights = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    check = randomisation_check(cnn, image, "gradient")
    assert abs(check.spearman) < 0.3
    assert check.spearman_abs < 0.9  # magnitudes keep some of the digit's shape (Adebayo et al.)
    assert np.array_equal(check.original, cnn.pixel_map(image, "gradient"))
    assert all(torch.equal(weights[k], v) for k, v in cnn.model.state_dict().items())  # randomised a copy


def test_cascading_randomisation_goes_from_the_output_layer_down(cnn, digits):
    check = randomisation_check(cnn, digits.test_x[0], "integrated-gradients", cascade=True)
    assert [name for name, _ in check.cascade] == ["net.12", "net.9", "net.6", "net.3", "net.0"]
    assert check.cascade[-1][1] == pytest.approx(check.spearman)  # all layers random = the full check
    assert all(abs(rho) < 0.5 for _, rho in check.cascade)



def test_random_deletion_takes_only_ink_until_the_ink_is_gone_on_a_real_digit(mnist):
    pixels = mnist.test_x[0].reshape(-1).numpy()
    ink = np.flatnonzero(pixels > 0)
    assert 0.1 < len(ink) / 784 < 0.3  # most of an MNIST digit is black
    for seed in range(3):
        order = ink_order(pixels, np.random.default_rng(seed).random(784))
        assert sorted(order[:len(ink)]) == sorted(ink) and sorted(order) == list(range(784))
    brightest = ink_order(pixels, -pixels.astype(float))
    assert np.all(np.diff(pixels[brightest[:len(ink)]].astype(int)) <= 0)


def test_deletion_baselines_are_tougher_than_shuffling_all_pixels_and_a_faithful_map_beats_both(mnist_cnn, mnist):
    image = mnist.test_x[0].float() / 255  # a 7
    curve = deletion_curve(mnist_cnn, image, mnist_cnn.pixel_map(image, "gradient"))
    ink = int((image > 0).sum())
    assert curve.fractions[0] == 0 and curve.fractions[-1] == 1  # x: the fraction of the ink deleted
    assert curve.intensity_probs.shape == curve.random_probs.shape == curve.probs.shape == (21,)
    blank = mnist_cnn.probabilities(torch.zeros(1, 1, 28, 28))[0, curve.cls].item()
    for probs in (curve.probs, curve.random_probs, curve.intensity_probs):  # all ink gone: a black image
        assert probs[-1] == pytest.approx(blank, abs=1e-5)
    counts = np.round(curve.fractions * ink).astype(int)
    old = _shuffle_all_784(mnist_cnn, image, counts, curve.cls)
    old_auc = float(((old[1:] + old[:-1]) * np.diff(curve.fractions)).sum() / 2)
    # Shuffling all 784 pixels spends ~80% of its deletions on black pixels (measured: AUC ≈ 1.0 vs 0.63).
    assert curve.random_auc < old_auc - 0.2
    assert curve.intensity_auc < curve.random_auc  # brightest-first is a harder reference still (≈0.45)
    assert curve.auc < curve.intensity_auc  # the map knows more than "bright ink matters" (≈0.30)

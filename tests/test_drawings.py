"""Synthetic hand-drawn digits: canvas format, reproducibility, coverage, and that they read as digits."""
from __future__ import annotations

import numpy as np
import pytest

from core.data.drawings import TEMPLATES, draw_digit, drawing_set
from core.data.preprocess import to_model_inputs
from tests.test_preprocess import assert_mnist_like


@pytest.fixture(scope="module")
def small_set() -> tuple[list[np.ndarray], np.ndarray]:
    return drawing_set(n_per_digit=4, seed=0)


def test_a_drawing_is_an_rgba_canvas_with_opaque_strokes_on_transparency():
    image = draw_digit(3, np.random.default_rng(0))
    assert image.shape == (280, 280, 4) and image.dtype == np.uint8
    alpha = image[..., 3]
    assert alpha[0, 0] == 0 and (alpha == 255).sum() > 100  # transparent paper, opaque ink
    assert set(np.unique(alpha)) <= {0, 255}
    assert draw_digit(3, np.random.default_rng(0), size=100).shape == (100, 100, 4)


def test_the_same_seed_gives_the_same_set_and_another_seed_a_different_one():
    first, labels = drawing_set(n_per_digit=2, seed=7)
    again, labels_again = drawing_set(n_per_digit=2, seed=7)
    other, _ = drawing_set(n_per_digit=2, seed=8)
    assert np.array_equal(labels, labels_again)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_a_smaller_set_is_the_start_of_a_larger_one():
    small, small_labels = drawing_set(n_per_digit=1, seed=3)
    large, large_labels = drawing_set(n_per_digit=2, seed=3)
    assert np.array_equal(large_labels[:10], small_labels)
    assert all(np.array_equal(a, b) for a, b in zip(small, large))


def test_every_digit_appears_equally_often(small_set):
    canvases, labels = small_set
    assert len(canvases) == len(labels) == 40 and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), np.full(10, 4))


def test_every_digit_has_several_templates():
    assert sorted(TEMPLATES) == list(range(10))
    assert all(len(templates) >= 2 for templates in TEMPLATES.values())


def test_ink_is_present_and_never_touches_the_canvas_edge(small_set):
    for canvas in small_set[0]:
        alpha = canvas[..., 3]
        assert (alpha > 0).sum() > 50
        assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0


def test_drawings_vary_in_size_position_and_colour(small_set):
    heights, centres, colours = [], [], set()
    for canvas in small_set[0]:
        rows, cols = np.flatnonzero(canvas[..., 3].any(axis=1)), np.flatnonzero(canvas[..., 3].any(axis=0))
        heights.append(rows[-1] - rows[0])
        centres.append((rows[0] + rows[-1]) / 2)
        colours.add(tuple(canvas[rows[0], cols][canvas[rows[0], cols, 3] == 255][0, :3]))
    assert min(heights) < 0.4 * 280 and max(heights) > 0.7 * 280
    assert np.std(centres) > 15 and len(colours) >= 3


def test_every_drawing_preprocesses_into_an_mnist_like_digit(small_set):
    for x in to_model_inputs(small_set[0]):
        assert_mnist_like(x)


def test_drawings_are_recognisable_by_a_plain_mnist_template_matcher(mnist_sample):  # noqa: F811
    # Nearest MNIST class mean reads ~79% of MNIST itself; shapeless scribbles would score ~10%.
    images, labels = mnist_sample
    means = np.stack([images[labels == d].mean(axis=0).ravel() for d in range(10)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    canvases, truth = drawing_set(n_per_digit=10, seed=1)
    x = to_model_inputs(canvases).reshape(len(truth), -1)
    guess = (x / np.linalg.norm(x, axis=1, keepdims=True) @ means.T).argmax(axis=1)
    assert (guess == truth).mean() >= 0.5


@pytest.mark.parametrize("digit", [-1, 10, 3.5])
def test_a_digit_outside_0_to_9_is_refused(digit):
    with pytest.raises(ValueError, match="0 to 9"):
        draw_digit(digit, np.random.default_rng(0))

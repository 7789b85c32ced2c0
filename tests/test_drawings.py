"""Synthetic hand-drawn digits: canvas format, reproducibility, coverage, and that they read as digits.

Two kinds: template drawings (draw_digit) and real MNIST handwriting re-stroked on the canvas
(core.data.restroke), which the shipped starter must read as well as strangers' drawings.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from core.data import restroke
from core.data.drawings import TEMPLATES, draw_digit, drawing_set
from core.data.datasets import outside_digits
from core.data.preprocess import to_model_input
from core.data.restroke import (FLAG_ANGLE, FLAG_LENGTH, FLAG_OFF_STEM, MEASURE_PEN, PLAIN_HEIGHT, plain_restroke,
                                restroke_digit, restroked_inputs, skeleton_edges, with_flag)
from core.inference.predict import Predictor
from core.inference.weights import ASSETS, STARTER_CARD
from core.models.zoo import with_glow
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


def test_one_template_can_be_drawn_and_a_missing_one_is_refused():
    with pytest.raises(ValueError, match="templates 0 to 2, not 3"):  # the starter's tests draw one template each
        draw_digit(1, np.random.default_rng(0), template=3)


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


# -- real handwriting, re-stroked ----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_28(mnist) -> tuple[np.ndarray, np.ndarray]:
    """A fixed sample of MNIST test digits (uint8 28×28) and labels: held out from the starter's training."""
    return mnist.test_x[:200].numpy(), mnist.test_y[:200].numpy()


@pytest.fixture(scope="module")
def starter() -> Predictor:
    return Predictor.starter()


def test_a_restroked_digit_is_an_rgba_canvas_with_opaque_strokes_on_transparency(digits_28):
    image = restroke_digit(digits_28[0][0], np.random.default_rng(0))
    assert image.shape == (280, 280, 4) and image.dtype == np.uint8
    alpha = image[..., 3]
    assert alpha[0, 0] == 0 and (alpha == 255).sum() > 500
    assert set(np.unique(alpha)) <= {0, 255}
    assert len({tuple(px) for px in image[alpha == 255][:, :3]}) == 1  # one pen colour
    assert restroke_digit(digits_28[0][0], np.random.default_rng(0), size=100).shape == (100, 100, 4)


def test_restroking_is_reproducible_for_a_seed_and_differs_across_seeds(digits_28):
    digit = digits_28[0][3]
    first = restroke_digit(digit, np.random.default_rng([4, 2]))
    assert np.array_equal(first, restroke_digit(digit, np.random.default_rng([4, 2])))
    assert not np.array_equal(first, restroke_digit(digit, np.random.default_rng([5, 2])))


def test_restroked_inputs_drawn_in_chunks_equal_one_batch(digits_28):
    images = digits_28[0][:6]
    whole = restroked_inputs(images, seed=9)
    parts = np.concatenate([restroked_inputs(images[:4], seed=9), restroked_inputs(images[4:], seed=9, start=4)])
    assert whole.shape == (6, 28, 28) and whole.dtype == np.float32
    assert np.array_equal(whole, parts)
    for x in whole:
        assert_mnist_like(x)


def test_a_wider_pen_inks_more_of_the_canvas(digits_28):
    ratios = []
    for seed in range(8):
        digit = digits_28[0][seed]
        thin = (restroke_digit(digit, np.random.default_rng(seed), pen=(10, 10))[..., 3] > 0).sum()
        wide = (restroke_digit(digit, np.random.default_rng(seed), pen=(25, 25))[..., 3] > 0).sum()
        assert wide > thin  # same pose and size (same seed): only the pen differs
        ratios.append(wide / thin)
    assert np.median(ratios) > 1.5


def test_restroked_drawings_stay_on_the_canvas_and_vary_in_size_and_place(digits_28):
    heights, centres = [], []
    for i, digit in enumerate(digits_28[0][:30]):
        for size in (280, 100):
            alpha = restroke_digit(digit, np.random.default_rng([1, i]), size=size)[..., 3]
            assert (alpha > 0).sum() > 20
            assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0
        rows = np.flatnonzero(alpha.any(axis=1))  # the 100 px one
        heights.append((rows[-1] - rows[0]) / 100)
        centres.append((rows[0] + rows[-1]) / 2)
    assert min(heights) < 0.4 and max(heights) > 0.7 and np.std(centres) > 5


def test_the_skeleton_is_a_thin_centre_line_inside_the_digit(digits_28):
    digit = digits_28[0][1]
    points, pairs = skeleton_edges(digit)
    assert points.min() >= 0 and points.max() <= 28
    assert 0 < len(points) < (digit > 100).sum() * 4  # far fewer than the ink's pixels at 4× scale
    assert pairs.min() >= 0 and pairs.max() < len(points)
    assert np.abs(points[pairs[:, 0]] - points[pairs[:, 1]]).max() <= 0.25 + 1e-9  # neighbours only
    with pytest.raises(ValueError, match="ink"):
        skeleton_edges(np.zeros((28, 28), np.uint8))


def test_a_flag_leaves_the_top_of_a_1s_stem_down_to_the_left_and_a_foot_crosses_its_bottom():
    stem = np.stack([np.full(81, 14.0), np.linspace(4.0, 24.0, 81)], axis=1)  # an upright 1, 20 px tall
    pairs = np.stack([np.arange(80), np.arange(1, 81)], axis=1)
    for seed in range(20):
        points, joined = with_flag(stem, pairs, np.random.default_rng(seed))
        flag = points[len(stem):]
        assert len(flag) >= 2 and np.array_equal(flag[0], stem[0])  # it starts at the top of the stem ...
        assert [0, len(stem)] in joined.tolist()  # ... joined to it, so the pen does not lift
        assert np.abs(points[joined[:, 0]] - points[joined[:, 1]]).max() <= 0.25 + 1e-9  # drawn as one line
        tip = flag[-1] - flag[0]
        assert tip[0] < 0 and tip[1] > 0  # down and to the left, steeper than a 7's bar
        assert FLAG_ANGLE[0] - 1e-6 <= np.degrees(np.arctan2(tip[1], -tip[0])) <= FLAG_ANGLE[1] + 1e-6
        assert FLAG_LENGTH[0] * 20 - 1e-6 <= np.linalg.norm(tip) <= FLAG_LENGTH[1] * 20 + 1e-6
        assert flag[:, 1].max() < 4 + 20 * FLAG_LENGTH[1]  # no foot (at y = 24) unless asked for
    # A 1 leaning forward, its top to the right, 75° from the horizontal: a flag at 55-65° would lie along it and
    # is left out
    leaning = np.stack([np.linspace(14.0, 0.0, 81), np.linspace(4.0, 24.0, 81)], axis=1)
    leaning[:, 0] = 14 - (leaning[:, 1] - 4) / np.tan(np.radians(75))
    bare = 0
    for seed in range(40):
        points, joined = with_flag(leaning, pairs, np.random.default_rng(seed))
        if len(points) == len(leaning):
            bare += 1
            assert joined is pairs
        else:
            tip = points[-1] - points[len(leaning)]
            off = np.degrees(np.arccos(tip @ (leaning[-1] - leaning[0]) / np.linalg.norm(tip) / np.linalg.norm(
                leaning[-1] - leaning[0])))
            assert off >= FLAG_OFF_STEM - 1e-6
    assert 0 < bare < 40
    points, joined = with_flag(stem, pairs, np.random.default_rng(0), foot=True)
    foot = points[points[:, 1] == 24.0]
    assert foot[:, 0].min() < 13 and foot[:, 0].max() > 15  # a bar across the bottom, on both sides of the stem
    assert joined.max() < len(points)


def test_restroked_1s_get_their_flags_and_feet_reproducibly(mnist, monkeypatch):
    ones = mnist.train_x[mnist.train_y == 1][:6].numpy()
    flagged = restroked_inputs(ones, seed=3, flag=True, foot=0.5)
    assert np.array_equal(flagged, restroked_inputs(ones, seed=3, flag=True, foot=0.5))
    for x in flagged:
        assert_mnist_like(x)
    feet: list[bool] = []
    real = restroke.with_flag
    monkeypatch.setattr(restroke, "with_flag", lambda points, pairs, rng, foot=False: (
        feet.append(foot), real(points, pairs, rng, foot))[1])
    restroked_inputs(ones, seed=3)
    assert feet == []  # no flag unless asked for
    assert np.array_equal(restroked_inputs(ones, seed=3, flag=True, foot=0.5), flagged)  # through with_flag ...
    assert len(feet) == 6 and 0 < sum(feet) < 6  # ... each 1, about half with a foot


@pytest.fixture(scope="module")
def bar() -> np.ndarray:
    """An upright 1: a bar two pixels wide."""
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 13:15] = 255
    return image


@pytest.fixture(scope="module")
def ring_and_speck() -> np.ndarray:
    ring = np.zeros((28, 28), np.uint8)
    ring[8:20, 10:18] = 255
    ring[14, 14] = 0  # a loop closed to a pinhole, as a thick pen leaves it
    ring[3, 24] = 255  # and a stray speck
    return ring


def test_clean_thinning_drops_a_speck_and_closes_a_pinhole_that_plain_thinning_keeps(ring_and_speck):
    for clean, loops, speck in ((True, False, False), (False, True, True)):
        points, _ = skeleton_edges(ring_and_speck, 0.5, upscale=2, clean=clean)
        near_speck = np.linalg.norm(points - [24.5, 3.5], axis=1) < 1.5  # pixel (3, 24)'s centre, x then y
        assert near_speck.any() == speck
        body = points[~near_speck]
        around = (np.abs(body[:, 0] - 14.5) > 1) | (np.abs(body[:, 1] - 14.5) > 1)  # outside the pinhole's box
        assert around.all() == loops  # a loop around the pinhole, or a line through where it was


def test_a_plain_restroke_draws_what_plain_thinning_keeps_and_the_projects_own_drops(ring_and_speck):
    def parts(image: np.ndarray) -> int:
        return ndimage.label(image[..., 3] > 0)[1]

    for seed in range(4):
        assert parts(plain_restroke(ring_and_speck, np.random.default_rng(seed))) == 2  # the speck drawn as a dot
        assert parts(restroke_digit(ring_and_speck, np.random.default_rng(seed))) == 1


def test_a_plain_restroke_is_reproducible_unbent_and_placed_at_varied_sizes(bar):
    def lean(image: np.ndarray) -> float:
        """How far the ink's middle moves sideways from its top fifth to its bottom fifth, per unit of height."""
        alpha = image[..., 3] > 0
        rows = np.flatnonzero(alpha.any(axis=1))
        fifth = max(1, len(rows) // 5)
        middle = [np.mean(np.nonzero(alpha[r])[0]) for r in (rows[:fifth], rows[-fifth:]) for r in r]
        return abs(np.mean(middle[:fifth]) - np.mean(middle[fifth:])) / np.ptp(rows)

    heights = []
    for seed in range(12):
        image = plain_restroke(bar, np.random.default_rng(seed))
        assert np.array_equal(image, plain_restroke(bar, np.random.default_rng(seed)))
        alpha = image[..., 3]
        assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0
        assert lean(image) < 0.03  # no slant, rotation or bend: the bar stays upright
        heights.append(np.ptp(np.flatnonzero(alpha.any(axis=1))) / 280)
    assert PLAIN_HEIGHT[0] - 0.01 <= min(heights) < max(heights) <= PLAIN_HEIGHT[1] + 0.08  # + the pen's round caps
    leaning = [lean(restroke_digit(bar, np.random.default_rng(seed), pen=MEASURE_PEN)) for seed in range(12)]
    assert max(leaning) > 0.15  # the project's own re-stroke slants and turns it


def test_restroking_draws_from_its_generator_in_a_fixed_order(bar):
    # Every training drawing and every measure depends on this order: a change to it (a draw added, moved or
    # dropped) silently changes the starter's training data and every figure measured with these generators
    for draw, expected in ((lambda rng: restroke_digit(bar, rng), 0.33791123),
                           (lambda rng: restroke_digit(bar, rng, flag=True, foot=1.0), 0.08401534),
                           (lambda rng: plain_restroke(bar, rng), 0.60663578)):
        rng = np.random.default_rng(0)
        draw(rng)
        assert rng.random() == pytest.approx(expected, abs=1e-8)


def test_restroked_inputs_can_be_thinned_plainly(digits_28):
    images = digits_28[0][:4]
    plain = restroked_inputs(images, seed=2, pen=MEASURE_PEN, plain=True)
    expected = [to_model_input(plain_restroke(im, np.random.default_rng([2, i]))) for i, im in enumerate(images)]
    assert np.array_equal(plain, np.stack(expected))
    assert not np.array_equal(plain, restroked_inputs(images, seed=2, pen=MEASURE_PEN))
    with pytest.raises(ValueError, match="no flag"):
        restroked_inputs(images, plain=True, flag=True)


def test_the_starter_reads_other_writers_digits_thinned_plainly(starter):
    # scikit-learn's digits (UCI, 43 writers outside MNIST), thinned and re-drawn as another tool would: the
    # shipped starter reads 89.0% through its glow and 86.5% without; the first starter, which strangers' drawings
    # were first measured on, 83.8%
    images, labels = outside_digits()
    drawn = restroked_inputs(images, seed=0, pen=MEASURE_PEN, plain=True)
    glowing = (starter.probabilities(drawn).argmax(axis=1) == labels).mean()
    assert glowing >= 0.88
    model = starter.models[0]
    assert model.glow_amount == pytest.approx(json.loads(STARTER_CARD.read_text())["read_glow"]) and model.glow_amount
    plain = Predictor([with_glow(model, 0.0)], ["without the glow"])
    assert glowing >= (plain.probabilities(drawn).argmax(axis=1) == labels).mean() + 0.015  # the glow is what gains


def test_the_starter_reads_other_writers_digits_blown_up_to_the_whole_square(starter):
    # The stand-in nearest issue 8's strangers' handwriting: the first shipped starter reads it at 88.2% with the
    # issue's own commonest misreads (issue 8: 86.7%); the shipped one 93.2%. The 95% over half fonts and
    # half handwriting needs about 90% of the handwriting.
    box_x, box_y = outside_digits()
    images, labels = outside_digits(whole_square=True)
    assert np.array_equal(labels, box_y) and images.shape == box_x.shape == (1797, 28, 28)
    assert (images[:, :4].max(axis=(1, 2)) > 0).mean() > 0.9 > (box_x[:, :4].max(axis=(1, 2)) > 0).mean()  # whole
    drawn = restroked_inputs(images, seed=0, pen=MEASURE_PEN, plain=True)
    assert (starter.probabilities(drawn).argmax(axis=1) == labels).mean() >= 0.92


def test_the_starter_reads_restroked_test_digits_as_their_labels(digits_28, starter):
    images, labels = digits_28[0][100:110], digits_28[1][100:110]
    guess = starter.probabilities(restroked_inputs(images, seed=3)).argmax(axis=1)
    assert (guess == labels).sum() >= 9


def test_the_starter_reads_at_least_95_percent_of_held_out_restroked_handwriting(digits_28, starter):
    images, labels = digits_28
    guess = starter.probabilities(restroked_inputs(images, seed=0)).argmax(axis=1)
    assert (guess == labels).mean() >= 0.95


def test_the_starter_card_states_what_it_learned_from():
    info = json.loads(STARTER_CARD.read_text())
    data = info["training_data"]
    generated = ("restroked_mnist_train", "low_res_restroked_mnist_train", "flagged_ones_mnist_train", "font_digits")
    assert data["mnist_train"] == 55_000 and all(data[kind] > 0 for kind in generated)
    assert data["total"] == data["mnist_train"] + sum(data[kind] for kind in generated)
    assert {"test_accuracy", "drawings_accuracy", "handwriting_accuracy", "outside_handwriting_accuracy",
            "held_out_fonts_typed_accuracy", "held_out_fonts_restroked_accuracy"} <= set(info["metrics"])
    card = (ASSETS / "STARTER_MODEL_CARD.md").read_text()
    assert all(f"{data[kind]:,}" in card for kind in generated)
    assert "MNIST training split" in card and "outside MNIST" in card and "Fonts kept out of training" in card

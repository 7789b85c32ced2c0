"""The from-scratch NumPy MLP: backprop and SGD against torch autograd, learning, accuracy, the stepper."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from core.models.numpy_mlp import PARAMS, TORCH_NAMES, NumpyMLP, Stepper, epoch_order


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread: these matrices are small, and extra threads crawl on busy shared cores."""
    with threadpool_limits(limits=1):
        yield


def random_batch(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 784)), rng.integers(0, 10, n)


def model_with_random_biases(seed: int = 1, lr: float = 0.01) -> NumpyMLP:
    # Non-zero biases, so a bias-handling mistake cannot hide behind the zero init.
    model = NumpyMLP(seed=seed, lr=lr)
    rng = np.random.default_rng(seed + 100)
    arrays = model.arrays()
    arrays["b1"] = rng.normal(0, 0.5, arrays["b1"].shape)
    arrays["b2"] = rng.normal(0, 0.5, arrays["b2"].shape)
    return NumpyMLP.from_arrays(**arrays, lr=lr)


def torch_twin(model: NumpyMLP) -> nn.Module:
    net = nn.Sequential(nn.Linear(784, model.hidden), nn.Sigmoid(), nn.Linear(model.hidden, 10)).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.to_torch_state().items()})
    return net


def prototype_problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten random 784-pixel class prototypes plus pixel noise, clipped to [0, 1] like MNIST / 255."""
    protos = np.random.default_rng(1234).random((10, 784))  # the same classes for every split
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    return np.clip(protos[y] + rng.normal(0, 0.3, (n, 784)), 0, 1), y


def test_loss_and_gradients_equal_torch_autograd():
    model = model_with_random_biases()
    x, y = random_batch()
    net = torch_twin(model)
    loss_t = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y), reduction="mean")
    loss_t.backward()
    grads = model.gradients(x, y)
    assert model.loss(x, y) == pytest.approx(loss_t.item(), rel=1e-9)
    torch_grads = dict(net.named_parameters())
    for name in PARAMS:
        expected = torch_grads[TORCH_NAMES[name]].grad.numpy()
        assert grads[name].shape == expected.shape
        np.testing.assert_allclose(grads[name], expected, rtol=1e-6, atol=1e-12, err_msg=name)


def test_forward_probabilities_equal_torch_softmax():
    model = model_with_random_biases()
    x, _ = random_batch(8)
    probs = model.forward(x)["probs"]
    expected = torch.softmax(torch_twin(model)(torch.from_numpy(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("lr", [0.01, 0.5])
def test_one_step_matches_torch_sgd(lr):
    model = model_with_random_biases(lr=lr)
    x, y = random_batch(100, seed=3)
    net = torch_twin(model)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    opt.zero_grad()
    loss_t = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
    loss_t.backward()
    opt.step()

    report = model.step(x, y)
    assert report.loss == pytest.approx(loss_t.item(), rel=1e-9)  # the loss before the update
    after = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    for name in PARAMS:
        np.testing.assert_allclose(getattr(model, name), after[TORCH_NAMES[name]], rtol=0, atol=1e-9, err_msg=name)


def test_step_report_norms_are_those_of_the_gradients_and_updates():
    model = model_with_random_biases(lr=0.1)
    x, y = random_batch(100)
    before, grads = model.arrays(), model.gradients(x, y)
    report = model.step(x, y)
    for name in PARAMS:
        assert report.grad_norms[name] == pytest.approx(np.linalg.norm(grads[name]))
        moved = np.linalg.norm(getattr(model, name) - before[name])
        assert report.update_norms[name] == pytest.approx(moved)
        assert report.update_norms[name] == pytest.approx(0.1 * report.grad_norms[name])
        assert report.update_ratios[name] == pytest.approx(moved / np.linalg.norm(before[name]))
    layers = report.layer_grad_norms()
    assert layers["layer1"] == pytest.approx(np.hypot(report.grad_norms["W1"], report.grad_norms["b1"]))
    assert report.step == 1 and report.batch_size == 100


def test_step_leaves_weights_the_page_kept_unchanged():
    model = NumpyMLP(seed=0)
    kept, copy = model.W1, model.W1.copy()
    model.step(*random_batch(100))
    np.testing.assert_array_equal(kept, copy)
    assert not np.array_equal(model.W1, copy)


def test_training_on_a_learnable_problem_reaches_high_accuracy_and_lowers_the_loss():
    x, y = prototype_problem(1000, seed=0)
    x_test, y_test = prototype_problem(500, seed=1)
    model = NumpyMLP(seed=0)  # the article's settings: hidden 128, lr 0.01
    stepper = Stepper(model, x, y, batch_size=100, seed=0)
    assert model.accuracy(x_test, y_test) < 0.5
    stepper.run(300)
    losses = stepper.losses
    assert len(losses) == 300
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert model.accuracy(x_test, y_test) > 0.9


def test_accuracy_compares_predicted_labels_not_probabilities():
    # Constant output favouring class 3: every prediction is 3, and no probability equals a label.
    b2 = np.zeros(10)
    b2[3] = 2.0
    model = NumpyMLP.from_arrays(np.zeros((128, 784)), np.zeros(128), np.zeros((10, 128)), b2)
    x = np.random.default_rng(0).random((4, 784))
    y = np.array([3, 3, 3, 5])
    probs = model.forward(x)["probs"]
    assert np.mean(probs.max(axis=1) == y) == 0.0  # the article's comparison would say 0%
    np.testing.assert_array_equal(model.predict(x), [3, 3, 3, 3])
    assert model.accuracy(x, y) == 0.75
    assert model.step(x, y).accuracy == 0.75


def test_float_labels_are_rejected():
    model = NumpyMLP(seed=0)
    x, y = random_batch(4)
    with pytest.raises(ValueError, match="integer"):
        model.accuracy(x, y.astype(float))
    with pytest.raises(ValueError, match="784"):
        model.predict(x[:, :100])


def test_loss_stays_finite_for_huge_logits():
    b2 = np.zeros(10)
    b2[0] = 1000.0
    model = NumpyMLP.from_arrays(np.zeros((128, 784)), np.full(128, -1000.0), np.zeros((10, 128)), b2)
    x = np.zeros((2, 784))
    assert model.loss(x, np.array([1, 1])) == pytest.approx(1000.0)
    assert model.loss(x, np.array([0, 0])) == pytest.approx(0.0, abs=1e-12)
    assert all(np.isfinite(g).all() for g in model.gradients(x, np.array([1, 0])).values())


def test_hidden_unit_images_are_that_units_incoming_weights():
    model = NumpyMLP(seed=0)
    images = model.hidden_unit_images([0, 5, 127])
    assert images.shape == (3, 28, 28)
    np.testing.assert_array_equal(images[1].ravel(), model.W1[5])


def test_seed_fixes_the_initial_weights():
    a, b, c = NumpyMLP(seed=7), NumpyMLP(seed=7), NumpyMLP(seed=8)
    np.testing.assert_array_equal(a.W1, b.W1)
    assert not np.array_equal(a.W1, c.W1)
    limit = np.sqrt(6 / (784 + 128))  # Glorot uniform bound
    assert np.abs(a.W1).max() <= limit and np.abs(a.W1).max() > 0.9 * limit


def test_stepper_visits_every_example_once_per_epoch():
    x, y = random_batch(250)
    stepper = Stepper(NumpyMLP(seed=0), x, y, batch_size=100, seed=5)
    epochs = []
    for _ in range(2):
        batches = [stepper.next_indices() for _ in range(3)]
        assert [len(b) for b in batches] == [100, 100, 50]  # the last batch is the remainder
        epochs.append(np.concatenate(batches))
        np.testing.assert_array_equal(np.sort(epochs[-1]), np.arange(250))
    assert stepper.epoch == 2 and stepper.position == 0
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    np.testing.assert_array_equal(epochs[1], epoch_order(250, seed=5, epoch=1))


def test_stepper_is_deterministic_for_a_seed():
    x, y = random_batch(300)
    runs = [Stepper(NumpyMLP(seed=0), x, y, seed=s) for s in (4, 4, 9)]
    for stepper in runs:
        stepper.run(5)
    assert runs[0].losses == runs[1].losses
    np.testing.assert_array_equal(runs[0].model.W1, runs[1].model.W1)
    assert runs[0].losses[1:] != runs[2].losses[1:]  # another seed, another batch order


def test_module_runs_without_torch():
    code = ("import sys, numpy as np\n"
            "from core.models.numpy_mlp import NumpyMLP\n"
            "NumpyMLP(seed=0).step(np.zeros((2, 784)), np.array([0, 1]))\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

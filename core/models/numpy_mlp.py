"""The article's 784-128-10 sigmoid MLP written from scratch in NumPy, for the "Under the hood" page.

`Stepper(NumpyMLP(seed=0), x, y, seed=0).step()` trains one batch of 100 and returns a `StepReport`
(loss, batch accuracy, gradient and update norms); `model.gradients(x, y)` is explicit backprop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

N_IN, N_OUT = 784, 10
PARAMS = ("W1", "b1", "W2", "b2")
# Names the same weights have in torch's nn.Sequential(Linear(784, h), Sigmoid(), Linear(h, 10)).
TORCH_NAMES = {"W1": "0.weight", "b1": "0.bias", "W2": "2.weight", "b2": "2.bias"}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^(-z)), without overflow for very negative z."""
    # exp(-log(1 + e^-z)); logaddexp never overflows, unlike the textbook form.
    return np.exp(-np.logaddexp(0.0, -z))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, shifted by the row maximum so exp never overflows."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_x(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != N_IN:
        raise ValueError(f"inputs must be (N, {N_IN}) flattened images, got shape {x.shape}")
    return x


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _check_x(x)
    y = np.asarray(y)
    # Integer labels only: the article's bug was comparing probabilities with labels.
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class ids 0-9, got dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= N_OUT):
        raise ValueError(f"labels must lie in 0..{N_OUT - 1}")
    return x, y


@dataclass(frozen=True)
class StepReport:
    """What one SGD step did: all figures are measured on the batch before the update."""

    step: int  # 1-based count of updates this model has had, this one included
    loss: float  # mean cross-entropy before the update
    accuracy: float  # argmax(probs) == label, before the update
    grad_norms: dict[str, float]  # ‖∂L/∂θ‖ (Frobenius) per parameter
    update_norms: dict[str, float]  # ‖Δθ‖ = η‖∂L/∂θ‖ per parameter
    update_ratios: dict[str, float]  # ‖Δθ‖ / ‖θ‖ before the update (≈1e-3 is the usual healthy size)
    batch_size: int

    def layer_grad_norms(self) -> dict[str, float]:
        """Gradient norm per layer, weights and bias together: {"layer1": ..., "layer2": ...}."""
        return {f"layer{i}": math.hypot(self.grad_norms[f"W{i}"], self.grad_norms[f"b{i}"]) for i in (1, 2)}


class NumpyMLP:
    """784-h-10 MLP: sigmoid hidden layer, softmax output, cross-entropy loss, plain SGD; float64."""

    def __init__(self, seed: int = 0, hidden: int = 128, lr: float = 0.01) -> None:
        if hidden < 1 or not lr > 0:
            raise ValueError("hidden must be >= 1 and lr > 0")
        rng = np.random.default_rng(seed)
        # Glorot/Xavier uniform, U(±√(6/(fan_in+fan_out))), keeps σ's inputs in its non-flat range;
        # biases start at zero.
        self.W1 = rng.uniform(-1, 1, (hidden, N_IN)) * math.sqrt(6 / (N_IN + hidden))
        self.b1 = np.zeros(hidden)
        self.W2 = rng.uniform(-1, 1, (N_OUT, hidden)) * math.sqrt(6 / (hidden + N_OUT))
        self.b2 = np.zeros(N_OUT)
        self.hidden = hidden
        self.lr = float(lr)
        self.steps = 0

    @classmethod
    def from_arrays(cls, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray,
                    lr: float = 0.01) -> NumpyMLP:
        """A model holding copies of the given weights (shapes as in z = W a + b)."""
        hidden = np.shape(W1)[0]
        model = cls(hidden=hidden, lr=lr)
        model.set_arrays({"W1": W1, "b1": b1, "W2": W2, "b2": b2})
        return model

    def arrays(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed W1, b1, W2, b2."""
        return {name: getattr(self, name).copy() for name in PARAMS}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the parameters with float64 copies of `arrays`, checking every shape."""
        h = self.hidden
        shapes = {"W1": (h, N_IN), "b1": (h,), "W2": (N_OUT, h), "b2": (N_OUT,)}
        new = {name: np.array(arrays[name], dtype=np.float64) for name in PARAMS}
        for name, value in new.items():
            if value.shape != shapes[name]:
                raise ValueError(f"{name} must have shape {shapes[name]}, got {value.shape}")
        for name, value in new.items():
            setattr(self, name, value)

    def to_torch_state(self) -> dict[str, np.ndarray]:
        """Parameters under the names of nn.Sequential(Linear, Sigmoid, Linear); wrap with torch.from_numpy."""
        # torch's Linear stores weight as (out, in) and computes x Wᵀ + b: the same layout as ours.
        return {TORCH_NAMES[name]: value for name, value in self.arrays().items()}

    @classmethod
    def from_torch_state(cls, state: dict, lr: float = 0.01) -> NumpyMLP:
        """A model from `to_torch_state`'s names; values may be arrays or detached CPU tensors."""
        arrays = {name: np.asarray(state[key], dtype=np.float64) for name, key in TORCH_NAMES.items()}
        return cls.from_arrays(**arrays, lr=lr)

    # Batches are rows, so the column-vector equations are transposed: W a + b becomes A Wᵀ + b.
    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every intermediate of the forward pass for a batch (N, 784): a0, z1, a1, z2, probs."""
        a0 = _check_x(x)
        z1 = a0 @ self.W1.T + self.b1  # z1 = W1 a0 + b1          (N, h)
        a1 = sigmoid(z1)  # a1 = σ(z1)
        z2 = a1 @ self.W2.T + self.b2  # z2 = W2 a1 + b2          (N, 10)
        probs = np.exp(log_softmax(z2))  # softmax(z2)
        return {"a0": a0, "z1": z1, "a1": a1, "z2": z2, "probs": probs}

    def _backprop(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
        """(mean loss, probs, gradients) from one forward and one backward pass."""
        x, y = _check_xy(x, y)
        f = self.forward(x)
        n = x.shape[0]
        rows = np.arange(n)
        loss = float(-log_softmax(f["z2"])[rows, y].mean())  # L = −log softmax(z2)[y], averaged
        onehot = np.zeros_like(f["probs"])
        onehot[rows, y] = 1.0
        # δ2 = softmax(z2) − onehot(y); dividing by N here averages every gradient over the batch.
        d2 = (f["probs"] - onehot) / n
        grads = {
            "W2": d2.T @ f["a1"],  # ∂L/∂W2 = δ2 a1ᵀ, summed over rows
            "b2": d2.sum(axis=0),  # ∂L/∂b2 = δ2
        }
        # δ1 = (W2ᵀ δ2) ⊙ σ'(z1), with σ'(z1) = a1 (1 − a1)
        d1 = (d2 @ self.W2) * f["a1"] * (1.0 - f["a1"])
        grads["W1"] = d1.T @ f["a0"]  # ∂L/∂W1 = δ1 a0ᵀ
        grads["b1"] = d1.sum(axis=0)  # ∂L/∂b1 = δ1
        return loss, f["probs"], {name: grads[name] for name in PARAMS}

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of the batch (log-softmax form, stable for large logits)."""
        x, y = _check_xy(x, y)
        logp = log_softmax(self.forward(x)["z2"])
        return float(-logp[np.arange(len(y)), y].mean())

    def gradients(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """∂L/∂θ for W1, b1, W2, b2 by explicit backprop, L the batch-mean cross-entropy."""
        return self._backprop(x, y)[2]

    def step(self, x: np.ndarray, y: np.ndarray) -> StepReport:
        """One plain SGD update θ ← θ − η ∂L/∂θ on the batch; reports the state before it."""
        loss, probs, grads = self._backprop(x, y)
        accuracy = float((probs.argmax(axis=1) == np.asarray(y)).mean())
        grad_norms, update_norms, ratios = {}, {}, {}
        for name in PARAMS:
            param = getattr(self, name)
            update = self.lr * grads[name]
            grad_norms[name] = float(np.linalg.norm(grads[name]))
            update_norms[name] = float(np.linalg.norm(update))
            size = float(np.linalg.norm(param))
            # Undefined (nan) while a parameter is all zeros, as the biases are before their first step.
            ratios[name] = update_norms[name] / size if size > 0 else math.nan
            # A new array, not in place: references the page kept still show the weights before the step.
            setattr(self, name, param - update)
        self.steps += 1
        return StepReport(self.steps, loss, accuracy, grad_norms, update_norms, ratios, len(y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class ids (N,): the argmax of the output probabilities."""
        return self.forward(x)["z2"].argmax(axis=1)  # softmax is monotone: argmax of z2 = of probs

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of predicted labels equal to the integer labels `y`."""
        x, y = _check_xy(x, y)
        return float((self.predict(x) == y).mean()) if len(y) else math.nan

    def hidden_unit_images(self, units: list[int] | np.ndarray) -> np.ndarray:
        """The incoming weights of the given hidden units as (k, 28, 28) images (copies)."""
        return self.W1[np.asarray(units, dtype=int)].reshape(-1, 28, 28).copy()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled visiting order of `n` examples in `epoch`: fixed by (seed, epoch) alone."""
    # Seeding per epoch lets the page jump to any epoch and get the same order as stepping there.
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass
class Stepper:
    """Steps a model through (x, y) one batch at a time in a seeded order, keeping the history."""

    model: NumpyMLP
    x: np.ndarray
    y: np.ndarray
    batch_size: int = 100
    seed: int = 0
    epoch: int = 0  # epochs completed
    position: int = 0  # index into this epoch's order of the next batch's first example
    history: list[StepReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.x, self.y = _check_xy(self.x, self.y)
        if len(self.y) == 0 or self.batch_size < 1:
            raise ValueError("need at least one example and batch_size >= 1")

    def next_indices(self) -> np.ndarray:
        """The dataset rows of the next batch, advancing the position (last batch may be short)."""
        order = epoch_order(len(self.y), self.seed, self.epoch)
        idx = order[self.position:self.position + self.batch_size]
        self.position += len(idx)
        if self.position >= len(order):  # epoch done: the next call starts the next shuffled order
            self.epoch, self.position = self.epoch + 1, 0
        return idx

    def step(self) -> StepReport:
        """Train on the next batch and append its report to `history`."""
        idx = self.next_indices()
        report = self.model.step(self.x[idx], self.y[idx])
        self.history.append(report)
        return report

    def run(self, steps: int) -> list[StepReport]:
        """`steps` consecutive batches; their reports."""
        return [self.step() for _ in range(steps)]

    @property
    def losses(self) -> list[float]:
        """Loss per step so far (each measured before its update)."""
        return [r.loss for r in self.history]

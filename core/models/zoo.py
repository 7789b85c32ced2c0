"""The model zoo: every network the app offers, by name, with its size and cost.

`build_model("seed-cnn", dropout=0.0, mean=0.1307, std=0.3081)` gives a `Classifier` that takes
float images (N, 1, 28, 28) in [0, 1] and returns logits (N, 10). `ZOO[name]` describes each model.
Modules avoid in-place ops and reuse no activation instance, so SHAP's DeepExplainer can walk them.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


class Normalize(nn.Module):
    """(x - mean) / std with the training split's statistics, stored with the weights."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([mean], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([std], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Glow(nn.Module):
    """A soft edge around every stroke: x + amount·(3×3 max of x − x), so a pixel next to ink gets `amount` of it.

    A way of reading, not of learning: it is set on a trained model's weights (the starter's, by
    scripts/train_starter.py) and never trained with. Measured on the starter, which learned from drawings: other
    writers' handwriting re-drawn on the canvas is read better through a glow of 0.2 (+1.3 points thinned as the
    project does, +2.5 thinned plainly) while MNIST and fonts read as before. Models trained on MNIST alone gain
    nothing from it (seed CNN −1.7 points, speed CNN +0.1, seed MLP +0.8), so a run trained from scratch gets none; a
    starter trained with the glow read no better than without it.

    The 3×3 max is written as max(a, b) = a + relu(b − a) over shifted copies (rows, then columns), not as a
    stride-1 MaxPool2d: SHAP's DeepExplainer rule for max-pooling assumes windows that do not overlap, and its
    attributions then no longer add up; through ReLUs (one module each) they do. Pixels are in [0, 1], so the
    zeros shifted in at the border change no maximum.
    """

    def __init__(self, amount: float) -> None:
        super().__init__()
        self.register_buffer("amount", torch.tensor([amount], dtype=torch.float32))
        self.rises = nn.ModuleList(nn.ReLU() for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x
        for dim, (up, down) in ((2, self.rises[:2]), (3, self.rises[2:])):
            spread = spread + up(_shifted(spread, dim, 1) - spread)
            spread = spread + down(_shifted(spread, dim, -1) - spread)
        return x + self.amount * (spread - x)


def _shifted(x: torch.Tensor, dim: int, by: int) -> torch.Tensor:
    """`x` moved by one pixel along `dim` (2: rows, 3: columns), zeros shifted in."""
    pad = [0, 0, 0, 0]
    pad[(3 - dim) * 2 + (0 if by > 0 else 1)] = 1
    padded = F.pad(x, pad)
    return padded.narrow(dim, 0 if by > 0 else 1, x.shape[dim])


class Classifier(nn.Module):
    """Normalisation baked in front of a zoo network, so callers feed plain [0, 1] pixels; optionally a Glow
    before it (kept in the weights file as `glow.amount`, so the model reads the same wherever it is loaded)."""

    def __init__(self, net: nn.Module, mean: float, std: float, glow: float = 0.0) -> None:
        super().__init__()
        self.glow = Glow(glow) if glow else None
        self.normalize = Normalize(mean, std)
        self.net = net

    @property
    def glow_amount(self) -> float:
        return 0.0 if self.glow is None else float(self.glow.amount)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.glow is not None:
            x = self.glow(x)
        return self.net(self.normalize(x))


# -- networks ------------------------------------------------------------------------------------
def seed_mlp(dropout: float = 0.0) -> nn.Module:
    """The article's MLP: 784-128-10 with a sigmoid hidden layer."""
    return keras_init(nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.Sigmoid(), nn.Dropout(dropout),
                                    nn.Linear(128, 10)))


def seed_cnn(dropout: float = 0.0) -> nn.Module:
    """The article's Keras CNN: Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10 (93,322 parameters)."""
    return keras_init(nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 26 -> 13
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # 13 -> 11 -> 5
        nn.Conv2d(64, 64, 3), nn.ReLU(),  # 5 -> 3
        nn.Flatten(), nn.Linear(64 * 3 * 3, 64), nn.ReLU(),
        nn.Dropout(dropout),  # p=0 by default (identity); present always so weight names never shift
        nn.Linear(64, 10),
    ))


def speed_cnn(dropout: float = 0.0) -> nn.Module:
    """Built for time to 99% on a CPU, after the public speed-run recipe (tuomaso/train_mnist_fast):
    Conv24 5×5-Pool-ReLU-Conv32 3×3-Pool-ReLU-Dense256-Dense10, pooling before the ReLU (the same result, less work)."""
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),  # 28 -> 24 -> 12
        nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),  # 12 -> 10 -> 5
        nn.Flatten(), nn.Linear(32 * 5 * 5, 256), nn.ReLU(),
        nn.Dropout(dropout),  # p=0 by default (identity); present always so weight names never shift
        nn.Linear(256, 10),
    )


def dp_cnn(dropout: float = 0.0) -> nn.Module:
    """The small tanh CNN used for DP-SGD on MNIST (Papernot et al. 2021, "Tempered sigmoid activations";
    Tramèr & Boneh 2021): two strided convs, tanh, 26,010 parameters. Bounded activations keep per-image
    gradients small, so less is lost to clipping, and a small model needs less noise to hide one image."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, stride=2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),  # 28 -> 14 -> 13
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, 1),  # 13 -> 5 -> 4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(),
        nn.Dropout(dropout),
        nn.Linear(32, 10),
    )


def keras_init(net: nn.Module) -> nn.Module:
    """Keras's defaults (Glorot-uniform weights, zero biases), as the article's models were built."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return net


class ResidualBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


def resnet(dropout: float = 0.0) -> nn.Module:
    """A small residual CNN: stem at 28×28, residual stages at 14×14 and 7×7, global pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),  # 28 -> 14
        ResidualBlock(32, 32),
        ResidualBlock(32, 64, stride=2),  # 14 -> 7
        ResidualBlock(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64, 10),
    )


class TinyViT(nn.Module):
    """A tiny Vision Transformer: 4×4 patches (49 tokens), 4 pre-norm blocks, width 64, 4 heads."""

    def __init__(self, dropout: float = 0.0, patch: int = 4, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: int = 2) -> None:
        super().__init__()
        tokens = (28 // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, 49, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])


# -- the zoo ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    description: str
    builder: Callable[[float], nn.Module]
    explainers: tuple[str, ...]  # SHAP explainers that apply: "deep" needs DeepLIFT-safe modules

    @property
    def params(self) -> int:
        return _measure(self.name)[0]

    @property
    def flops(self) -> int:
        """Forward FLOPs for one 28×28 image (multiply-add = 2 FLOPs)."""
        return _measure(self.name)[1]

    @property
    def head_flops(self) -> int:
        """Forward FLOPs of the output layer alone, for one image."""
        return _measure(self.name)[2]


ZOO: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("seed-mlp", "Seed MLP (article)", "784-128-10 fully connected, sigmoid hidden layer.",
              seed_mlp, ("gradient", "deep")),
    ModelSpec("seed-cnn", "Seed CNN (article)",
              "Keras classic: Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10, ReLU.", seed_cnn,
              ("gradient", "deep")),
    ModelSpec("speed-cnn", "Speed CNN", "Built for time to 99% on a CPU (after the public speed-run recipe): "
              "Conv24 5×5-Pool-Conv32 3×3-Pool-Dense256-Dense10, ReLU.", speed_cnn, ("gradient", "deep")),
    ModelSpec("dp-cnn", "DP CNN (tanh)", "Small tanh CNN built for differentially private training "
              "(Papernot et al. 2021): Conv16 8×8/2, Conv32 4×4/2, Dense32.", dp_cnn, ("gradient", "deep")),
    ModelSpec("resnet", "Small ResNet", "Residual CNN with BatchNorm and dropout; built for accuracy.",
              resnet, ("gradient", "deep")),
    ModelSpec("vit-tiny", "Tiny ViT", "Vision Transformer on 4×4 patches, 4 blocks, width 64. "
              "LayerNorm/GELU/attention: SHAP's DeepExplainer does not apply, use GradientExplainer.",
              TinyViT, ("gradient",)),
)}


def build_model(name: str, *, dropout: float = 0.0, mean: float = 0.1307, std: float = 0.3081,
                glow: float = 0.0) -> Classifier:
    """A freshly initialised zoo model (initialisation follows torch's global RNG).

    Dropout only changes a probability, never the weight names, so any weights load at any dropout.
    `glow`: read through a Glow of this amount (for trained weights only; see Glow).
    """
    if name not in ZOO:
        raise KeyError(f"Unknown model {name!r}; the zoo has: {', '.join(ZOO)}.")
    return Classifier(ZOO[name].builder(dropout), mean, std, glow)


def with_glow(model: Classifier, amount: float) -> Classifier:
    """The same trained network (shared, not copied), read through a Glow of `amount` (0: none)."""
    read = Classifier(model.net, float(model.normalize.mean), float(model.normalize.std), amount)
    return read.to(model.normalize.mean.device).train(model.training)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def head_name(model: nn.Module) -> str:
    """The qualified name of the output layer (the network's last Linear), e.g. "net.9" or "net.head".

    Transfer learning replaces this layer for a new task and, for a linear probe, trains only it.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)
             and module.out_features == 10]
    if not names:
        raise ValueError(f"{type(model).__name__} has no 10-way output layer.")
    return names[-1]


def train_flops(name: str, images: int, *, head_only: bool = False, attack_steps: int = 0) -> int:
    """Estimated FLOPs to train zoo model `name` on `images` images (validation and testing excluded).

    The usual estimate: a backward pass costs twice the forward, so a training step is 3× the forward FLOPs.
    A linear probe (`head_only`) runs the whole forward but back-propagates through the output layer only;
    an adversarial attack adds a forward and backward pass per attack step.
    """
    forward = ZOO[name].flops
    if head_only:
        per_image = forward + 2 * ZOO[name].head_flops
    else:
        per_image = 3 * forward * (1 + attack_steps)
    return int(images * per_image)


# Each zoo model's (parameters, forward FLOPs for one image, output layer's FLOPs), counted once and stored: counting
# runs torch's FlopCounterMode, whose first use imports torch._dynamo and Triton, about 170 MB more in every process
# that asks (the dashboard server, each training process) for figures that only change with the architecture.
# `python -m core.models.zoo` writes the file; a test checks it against a fresh count of every model.
MEASURES = Path(__file__).resolve().parents[1] / "assets" / "zoo_measures.json"


@functools.lru_cache(maxsize=None)
def _measure(name: str) -> tuple[int, int, int]:
    stored = _stored_measures().get(name)
    return tuple(int(v) for v in stored) if stored else count_measures(name)


@functools.lru_cache(maxsize=1)
def _stored_measures() -> dict[str, list[int]]:
    try:
        data = json.loads(MEASURES.read_text())
    except (OSError, ValueError):  # missing or damaged: every model is counted instead
        return {}
    return data if isinstance(data, dict) else {}


def count_measures(name: str) -> tuple[int, int, int]:
    """Count zoo model `name`'s parameters, forward FLOPs for one 28×28 image and its output layer's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng():
        net = ZOO[name].builder(0.0).train()  # train mode: eval would take the fused attention path, which the counter misses
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 28, 28))
    head = net.get_submodule(head_name(net))
    return count_params(net), int(counter.get_total_flops()), 2 * head.in_features * head.out_features


if __name__ == "__main__":  # python -m core.models.zoo: count every model and store the figures
    MEASURES.write_text(json.dumps({name: list(count_measures(name)) for name in ZOO}, indent=1) + "\n")
    print(f"wrote {MEASURES}")

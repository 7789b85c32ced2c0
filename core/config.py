"""Training configuration: one frozen dataclass, its validation, and the named presets.

Use `TrainConfig.from_preset("seed-cnn", epochs=1)`; every field is checked in `__post_init__`,
so an invalid config never exists (a `ConfigError` says which field and why).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.data import DATASETS
from core.errors import ConfigError
from core.models import ZOO

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored verbatim in every run's metadata."""

    model: str = "seed-cnn"  # a name from core.models.ZOO
    dataset: str = "mnist"  # a name from core.data.DATASETS
    optimizer: str = "adam"  # sgd (plain or with momentum), adam, adamw
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.0  # SGD only; 0 = plain SGD
    schedule: str = "constant"  # constant, step, cosine, onecycle (per optimiser step)
    step_every: int = 1  # step schedule: epochs between decays
    step_gamma: float = 0.1  # step schedule: lr multiplier at each decay
    warmup_fraction: float = 0.2  # onecycle: fraction of steps spent warming up
    batch_size: int = 64  # images per optimiser step
    epochs: int = 5  # passes over the training split
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    l1: float = 0.0  # L1 penalty coefficient on all weights, added to the loss
    dropout: float = 0.0  # dropout probability where the model has dropout
    label_smoothing: float = 0.0  # cross-entropy label smoothing, 0..<1
    augment: bool = False  # random affine (+ erasing) per batch, on the device
    rotate_deg: float = 10.0  # augmentation: max rotation, degrees either way
    scale: float = 0.1  # augmentation: max relative zoom either way
    translate_px: float = 2.0  # augmentation: max shift, pixels either way
    erase_prob: float = 0.0  # augmentation: probability of erasing a random patch
    stroke: float = 0.0  # augmentation: max stroke thickening/thinning, 0..1 of a one-pixel dilation
    seed: int = 0  # all randomness (init, shuffling, augmentation, dropout)
    device: str = "auto"  # auto = cuda, then mps, then cpu
    precision: str = "fp32"  # fp32 or bf16 autocast
    patience: int = 0  # early stopping: epochs without val-loss improvement; 0 = off
    train_size: int | None = None  # use only the first N training images (data-needed studies)
    train_on_val: bool = False  # also train on the validation images (all 60,000, as the article's Keras code)
    init_from: str | None = None  # start from this run's weights ("starter" = the shipped model): fine-tuning
    focus_errors: float = 0.0  # over-sample images the starting model finds hard: weight 1 + k·(1 − p(true))
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke runs)
    limit_batches: int | None = None  # at most this many batches per epoch (smoke runs)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes, e.g. preset name

    def __post_init__(self) -> None:
        _choice("model", self.model, tuple(ZOO))
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("device", self.device, DEVICES)
        _number("lr", self.lr, low=0.0, high=1000.0, low_open=True)
        _number("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        _number("step_gamma", self.step_gamma, low=0.0, high=1.0, low_open=True)
        _number("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0, high_open=True)
        _integer("step_every", self.step_every, low=1, high=10_000)
        _integer("batch_size", self.batch_size, low=1, high=60_000)
        _integer("epochs", self.epochs, low=1, high=10_000)
        _number("weight_decay", self.weight_decay, low=0.0, high=1.0)
        _number("l1", self.l1, low=0.0, high=1.0)
        _number("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        _number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True)
        _number("rotate_deg", self.rotate_deg, low=0.0, high=180.0)
        _number("scale", self.scale, low=0.0, high=0.9)
        _number("translate_px", self.translate_px, low=0.0, high=14.0)
        _number("erase_prob", self.erase_prob, low=0.0, high=1.0)
        _number("stroke", self.stroke, low=0.0, high=1.0)
        _integer("seed", self.seed, low=0, high=2**31 - 1)
        _integer("patience", self.patience, low=0, high=10_000)
        for name in ("train_size", "max_steps", "limit_batches"):
            value = getattr(self, name)
            if value is not None:
                _integer(name, value, low=1, high=10**9)
        _number("focus_errors", self.focus_errors, low=0.0, high=100.0)
        if self.focus_errors and not self.init_from:
            raise ConfigError("focus_errors needs init_from: hard images are judged by the model you start from.")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise ConfigError(f"init_from must be a run id (got {self.init_from!r}).")
        if self.optimizer != "sgd" and self.momentum:
            raise ConfigError(f"momentum applies to the sgd optimiser only (got optimizer={self.optimizer!r}).")
        for name in ("augment", "train_on_val"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false (got {getattr(self, name)!r}).")
        if self.train_on_val and self.patience:
            raise ConfigError("patience (early stopping) needs held-out validation images; turn off train_on_val.")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "TrainConfig":
        """The preset's values, then `overrides` on top (unknown names are rejected)."""
        if preset not in PRESETS:
            raise ConfigError(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
        values = {**PRESETS[preset]["config"], **overrides}
        extra = {**values.pop("extra", {}), "preset": preset}
        return cls.from_dict({**values, "extra": extra})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a plain dict (e.g. run metadata), rejecting unknown field names."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}.")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- presets -------------------------------------------------------------------------------
# Each preset documents where its numbers come from; `measured` is filled from README figures.
PRESETS: dict[str, dict[str, Any]] = {
    "seed-mlp": {
        "summary": "The article's MLP: 784-128-10, sigmoid, plain SGD lr 0.01, batch 100; 300 epochs "
                   "(plain SGD at this rate first reaches 97% on the test set at about epoch 160).",
        "config": dict(model="seed-mlp", optimizer="sgd", lr=0.01, batch_size=100, epochs=300),
    },
    "seed-cnn": {
        "summary": "The article's Keras CNN: 3 convs, 2 dense, ReLU, Adam, 5 epochs, batch 64, trained on all "
                   "60,000 images as Keras's model.fit did (validation curves then show training images).",
        "config": dict(model="seed-cnn", optimizer="adam", lr=1e-3, batch_size=64, epochs=5, train_on_val=True),
    },
    "fast": {
        "summary": "Quickest route to 99% on a laptop CPU: the seed CNN with one-cycle Adam, 2 epochs over all "
                   "60,000 training images.",
        "config": dict(model="seed-cnn", optimizer="adam", lr=3e-3, schedule="onecycle",
                       batch_size=128, epochs=2, train_on_val=True),
    },
    "best": {
        "summary": "Highest single-model accuracy in about 10 CPU minutes: residual CNN, augmentation, "
                   "one-cycle AdamW, label smoothing.",
        "config": dict(model="resnet", optimizer="adamw", lr=4e-3, schedule="onecycle", batch_size=128,
                       epochs=12, weight_decay=5e-4, label_smoothing=0.1, dropout=0.1, augment=True,
                       rotate_deg=10.0, scale=0.1, translate_px=2.0),
    },
    "starter": {
        "summary": "The shipped model: small ResNet trained with drawing-like augmentation (pen width, "
                   "rotation, zoom, shift) so mouse drawings are read as well as MNIST.",
        "config": dict(model="resnet", optimizer="adamw", lr=4e-3, schedule="onecycle", batch_size=128, epochs=5,
                       weight_decay=5e-4, label_smoothing=0.1, dropout=0.1, augment=True, rotate_deg=15.0,
                       scale=0.15, translate_px=2.5, stroke=0.8),
    },
}


def advice(cfg: TrainConfig, n_train: int) -> list[str]:
    """Warnings about valid but doubtful combinations, shown before a run starts."""
    notes = []
    if cfg.optimizer in ("adam", "adamw") and cfg.lr > 0.05:
        notes.append(f"A learning rate of {cfg.lr:g} is very high for {cfg.optimizer}; 1e-3 to 5e-3 is usual. "
                     "The run will likely diverge.")
    if cfg.optimizer == "sgd" and cfg.lr > 1.0:
        notes.append(f"A learning rate of {cfg.lr:g} with SGD will likely diverge; 0.01 to 0.1 is usual.")
    used = min(n_train, cfg.train_size or n_train)
    if cfg.batch_size > used:
        notes.append(f"The batch size ({cfg.batch_size}) is larger than the training images used ({used}): "
                     "each epoch is a single step.")
    if cfg.model == "seed-mlp" and cfg.augment and cfg.rotate_deg > 20:
        notes.append("Strong rotation hurts a small MLP more than it helps.")
    if cfg.l1 > 1e-3:
        notes.append(f"An L1 penalty of {cfg.l1:g} summed over all weights dominates the loss; try 1e-5 to 1e-4.")
    if cfg.dropout and cfg.model == "seed-mlp" and cfg.dropout > 0.5:
        notes.append("Dropout above 0.5 on a 128-unit layer leaves little capacity.")
    if cfg.precision == "bf16" and cfg.model == "vit-tiny":
        notes.append("bf16 on this CPU is slower than fp32 for the tiny ViT (measured); keep fp32 unless on a GPU.")
    return notes


# -- validation helpers --------------------------------------------------------------------
def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)} (got {value!r}).")


def _number(name: str, value: Any, *, low: float, high: float, low_open: bool = False,
            high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{name} must be a number in {lo}{low:g}, {high:g}{hi} (got {value!r}).")


def _integer(name: str, value: Any, *, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high} (got {value!r}).")

"""Training configuration: one frozen dataclass, its validation, and the named presets.

Use `TrainConfig.from_preset("seed-cnn", epochs=1)`; every field is checked in `__post_init__`,
so an invalid config never exists (a `ConfigError` says which field and why).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.data.datasets import DATASETS, DIGIT_DATASETS
from core.errors import ConfigError
from core.models.zoo import ZOO

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast where it is native and measured faster
DEVICES = ("auto", "cpu", "cuda", "mps")
TRANSFERS = ("none", "finetune", "probe")  # how a starting model is adapted: as is, new head + all layers, new head only
ADVERSARIAL = ("none", "fgsm", "pgd")  # adversarial training: fgsm = FGSM with random start (Wong et al.)


@dataclass(frozen=True)
class Setting:
    """How one TrainConfig field is shown and checked: the form, the CLI help and validation all read this."""

    label: str  # what a person sees, in the form and in error messages
    group: str  # model, optimisation, regularisation, augmentation, robustness & privacy, run, fine-tuning
    kind: str = "number"  # number, integer, choice, flag, text
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is not allowed
    high_open: bool = False
    options: tuple[str, ...] = ()
    optional: bool = False  # None allowed ("not set"; 0 in the form)
    widget: str = "input"  # input or slider (numbers); the form's choice
    step: float | None = None  # the form's increment
    form_high: float | None = None  # a slider's upper end when the useful range is narrower than the valid one
    help: str = ""
    shown_if: tuple[str, Any] | None = None  # only relevant when another field has this value (or one of a tuple)

    def read(self, value: Any) -> Any:
        """`value` as the setting takes it: the whole number 0 is "not set" (None) where the label says so ("Stop after
        steps (0 = no limit)"), for the form, the command line and a config file alike; False or 0.0 stay refused."""
        return None if self.optional and self.kind == "integer" and type(value) is int and value == 0 else value

    def check(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        if self.kind == "choice":
            ok = value in self.options
            rule = f"one of {', '.join(self.options)}"
        elif self.kind == "flag":
            ok, rule = isinstance(value, bool), "on or off (true or false)"
        elif self.kind == "text":
            ok, rule = value is None or isinstance(value, str), "text"
        elif self.kind == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
            rule = ("0 or " if self.optional else "") + f"a whole number from {self.low:,.0f} to {self.high:,.0f}"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok:
                ok = ((value > self.low if self.low_open else value >= self.low)
                      and (value < self.high if self.high_open else value <= self.high))
            lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
            rule = f"a number in {lo}{self.low:g}, {self.high:g}{hi}"
        if not ok:
            raise ConfigError(f"{self.label} must be {rule} (got {value!r}).", field=name)


SETTINGS: dict[str, Setting] = {
    "model": Setting("Model", "model", "choice", options=tuple(ZOO)),
    "dataset": Setting("Dataset", "model", "choice", options=tuple(DATASETS)),
    "train_size": Setting("Training images to use (0 = all)", "model", "integer", 1, 10**9, optional=True, step=1000,
                          help="Fewer images answer 'how much data does this model need?'"),
    "per_class": Setting("Labelled images per class (0 = all)", "model", "integer", 1, 10**6, optional=True,
                         help="A class-balanced sample of this many training images per class, drawn with the seed"),
    "optimizer": Setting("Optimiser", "optimisation", "choice", options=OPTIMIZERS),
    "lr": Setting("Learning rate (peak)", "optimisation", low=0.0, high=10.0, low_open=True, step=1e-4),
    "momentum": Setting("Momentum", "optimisation", low=0.0, high=1.0, high_open=True, widget="slider", form_high=0.99,
                        shown_if=("optimizer", "sgd")),
    "beta1": Setting("Adam β1", "optimisation", low=0.0, high=1.0, high_open=True, step=0.01,
                     shown_if=("optimizer", ("adam", "adamw")), help="How much of the previous gradient direction "
                     "each step keeps (0.9 is Adam's default; speed runs use about 0.7)"),
    "beta2": Setting("Adam β2", "optimisation", low=0.0, high=1.0, high_open=True, step=0.001,
                     shown_if=("optimizer", ("adam", "adamw")), help="How long the per-weight step sizes remember "
                     "(0.999 is Adam's default)"),
    "schedule": Setting("Schedule", "optimisation", "choice", options=SCHEDULES),
    "step_every": Setting("Decay every (epochs)", "optimisation", "integer", 1, 10_000, shown_if=("schedule", "step")),
    "step_gamma": Setting("Decay factor", "optimisation", low=0.0, high=1.0, low_open=True, step=0.05,
                          shown_if=("schedule", "step")),
    "warmup_fraction": Setting("Warm-up fraction", "optimisation", low=0.0, high=1.0, high_open=True,
                               widget="slider", form_high=0.9, shown_if=("schedule", "onecycle")),
    "batch_size": Setting("Batch size", "optimisation", "integer", 1, 60_000, step=16),
    "epochs": Setting("Epochs", "optimisation", "integer", 1, 10_000),
    "patience": Setting("Early-stopping patience (0 = off)", "optimisation", "integer", 0, 10_000),
    "weight_decay": Setting("L2 weight decay", "regularisation", low=0.0, high=1.0, step=1e-4),
    "l1": Setting("L1 penalty", "regularisation", low=0.0, high=1.0, step=1e-5),
    "dropout": Setting("Dropout", "regularisation", low=0.0, high=1.0, high_open=True, widget="slider", form_high=0.9),
    "label_smoothing": Setting("Label smoothing", "regularisation", low=0.0, high=1.0, high_open=True, widget="slider",
                               form_high=0.5),
    "augment": Setting("Augment training batches", "augmentation", "flag"),
    "rotate_deg": Setting("Rotation ± degrees", "augmentation", low=0.0, high=180.0, widget="slider", form_high=45.0),
    "scale": Setting("Zoom ± fraction", "augmentation", low=0.0, high=0.9, widget="slider", form_high=0.5),
    "translate_px": Setting("Shift ± pixels", "augmentation", low=0.0, high=14.0, widget="slider", form_high=6.0),
    "stroke": Setting("Pen width ±", "augmentation", low=0.0, high=1.0, widget="slider",
                      help="Thicken or thin strokes, as different pens do"),
    "erase_prob": Setting("Erasing probability", "augmentation", low=0.0, high=1.0, widget="slider"),
    "adversarial": Setting("Adversarial training", "robustness & privacy", "choice", options=ADVERSARIAL,
                           help="Train on attacked images: fgsm = one step from a random start (fast), pgd = several"),
    "adv_eps": Setting("Attack radius ε (pixels, 0..1)", "robustness & privacy", low=0.0, high=1.0, low_open=True, step=0.01,
                       help="How far each pixel may move; 0.3 is the usual MNIST benchmark"),
    "adv_steps": Setting("PGD steps", "robustness & privacy", "integer", 1, 100, shown_if=("adversarial", "pgd")),
    "dp": Setting("Differential privacy (DP-SGD)", "robustness & privacy", "flag",
                  help="Clip each image's gradient and add noise, so the model reveals little about any one image"),
    "target_epsilon": Setting("Privacy budget ε", "robustness & privacy", low=0.05, high=100.0, step=0.5,
                              shown_if=("dp", True), help="Lower is more private; about 1 to 8 is usual"),
    "delta": Setting("Privacy δ", "robustness & privacy", low=0.0, high=0.01, low_open=True, step=1e-6,
                     shown_if=("dp", True), help="Well below 1 / training images; 1e-5 for MNIST"),
    "max_grad_norm": Setting("Per-image gradient clip", "robustness & privacy", low=0.0, high=100.0, low_open=True,
                             step=0.1, shown_if=("dp", True)),
    "precision": Setting("Precision", "run", "choice", options=PRECISIONS,
                         help="auto = bf16 autocast for the CNNs on a GPU or a CPU with AMX (measured 1.4–1.8× faster "
                              "there at the same accuracy), fp32 everywhere else"),
    "device": Setting("Device", "run", "choice", options=DEVICES),
    "seed": Setting("Seed", "run", "integer", 0, 2**31 - 1),
    "max_steps": Setting("Stop after steps (0 = no limit)", "run", "integer", 1, 10**9, optional=True),
    "limit_batches": Setting("Batches per epoch (0 = all)", "run", "integer", 1, 10**9, optional=True),
    "repeat": Setting("Passes over the training images per epoch", "run", "integer", 1, 100_000,
                      help="Few labelled images: repeat them so an epoch (and its validation) is not a single step"),
    "train_on_val": Setting("Also train on the 5,000 validation images (as the article trained on all 60,000)",
                            "run", "flag", help="Validation curves then show images the model trained on."),
    "init_from": Setting("Start from model", "fine-tuning", "text", optional=True),
    "focus_errors": Setting("Focus on hard images (k)", "fine-tuning", low=0.0, high=100.0),
    "drawings": Setting("Also train on a drawing set", "fine-tuning", "text", optional=True,
                        help="A drawing set (id or name): its train half joins the training images; its held-out "
                             "half is never trained on and measures the model before and after"),
    "drawings_factor": Setting("Drawing set oversampling (×)", "fine-tuning", "integer", 1, 1000,
                               help="Each drawing of the set's train half is repeated this many times per epoch, so a "
                                    "few hundred drawings weigh against 55,000 MNIST images"),
    "transfer": Setting("Adapting the starting model", "fine-tuning", "choice", options=TRANSFERS,
                        help="none: continue training it as it is (same task); finetune: a new output layer, every "
                             "layer trains; probe: a new output layer on frozen features (a linear probe)"),
}


def reject_unknown(cls: type, values: dict[str, Any], what: str) -> None:
    """A ConfigError naming the keys of `values` that are not fields of dataclass `cls`."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"Unknown {what}(s): {', '.join(unknown)}.")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored verbatim in every run's metadata."""

    model: str = "seed-cnn"  # a name from core.models.zoo.ZOO
    dataset: str = "mnist"  # a name from core.data.datasets.DATASETS
    optimizer: str = "adam"  # sgd (plain or with momentum), adam, adamw
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.0  # SGD only; 0 = plain SGD
    beta1: float = 0.9  # Adam/AdamW: decay rate of the running mean of gradients
    beta2: float = 0.999  # Adam/AdamW: decay rate of the running mean of squared gradients
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
    precision: str = "auto"  # auto (bf16 where native and measured faster, else fp32), fp32, or bf16 autocast
    patience: int = 0  # early stopping: epochs without val-loss improvement; 0 = off
    train_size: int | None = None  # use only the first N training images (data-needed studies)
    per_class: int | None = None  # a class-balanced sample of this many training images per class (seeded)
    repeat: int = 1  # passes over the (few) training images per epoch
    train_on_val: bool = False  # also train on the validation images (all 60,000, as the article's Keras code)
    init_from: str | None = None  # start from this run's weights ("starter" = the shipped model): fine-tuning
    transfer: str = "none"  # with init_from: none (as is), finetune (new head, all layers), probe (new head only)
    drawings: str | None = None  # a drawing set's id (or name, resolved to its id when the run is created)
    drawings_factor: int = 20  # times each drawing of the set's train half is repeated per epoch (oversampling)
    focus_errors: float = 0.0  # over-sample images the starting model finds hard: weight 1 + k·(1 − p(true))
    adversarial: str = "none"  # none, fgsm (FGSM with random start, step 1.25·ε), pgd (adv_steps steps)
    adv_eps: float = 0.1  # adversarial training: L∞ radius in pixel units of [0, 1]
    adv_steps: int = 7  # adversarial training with pgd: steps of 2.5·ε/steps each
    dp: bool = False  # DP-SGD (Opacus): per-image clipping, Gaussian noise, Poisson-sampled batches
    target_epsilon: float = 3.0  # DP: privacy budget ε reached at the end of the run
    delta: float = 1e-5  # DP: δ of (ε, δ)-differential privacy
    max_grad_norm: float = 1.0  # DP: per-image gradient L2 clip
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke runs)
    limit_batches: int | None = None  # at most this many batches per epoch (smoke runs)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes, e.g. preset name

    def __post_init__(self) -> None:
        for name, setting in SETTINGS.items():
            object.__setattr__(self, name, setting.read(getattr(self, name)))
            setting.check(name, getattr(self, name))
        if self.focus_errors and not self.init_from:
            raise ConfigError("Focus on hard images needs a model to start from (init_from): hard images are judged "
                              "by the model you fine-tune.", field="focus_errors")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from.strip()):
            raise ConfigError(f"The model to start from must be a run id or 'starter' (got {self.init_from!r}).",
                              field="init_from")
        if self.transfer != "none" and not self.init_from:
            raise ConfigError(f"Transfer by {self.transfer} needs a pre-trained model to start from (init_from).",
                              field="transfer")
        if self.drawings is not None and (not isinstance(self.drawings, str) or not self.drawings.strip()):
            raise ConfigError(f"The drawing set to train on must be a set's id or name (got {self.drawings!r}).",
                              field="drawings")
        if self.drawings and self.dataset not in DIGIT_DATASETS:
            raise ConfigError(f"A drawing set holds digits; train on {' or '.join(DIGIT_DATASETS)} with it, not "
                              f"{self.dataset}.", field="drawings")
        if self.per_class and self.train_on_val:
            raise ConfigError("A class-balanced sample of labelled images is drawn from the training split only; "
                              f"turn off '{SETTINGS['train_on_val'].label}'.", field="per_class")
        if self.per_class and self.train_size:
            raise ConfigError("Choose either training images to use or labelled images per class, not both.",
                              field="per_class")
        if self.optimizer != "sgd" and self.momentum:
            raise ConfigError(f"Momentum applies to the sgd optimiser only (got optimiser {self.optimizer!r}).",
                              field="momentum")
        if self.optimizer == "sgd" and (self.beta1, self.beta2) != (0.9, 0.999):
            raise ConfigError("Adam's β1 and β2 apply to the adam and adamw optimisers only; sgd has momentum.",
                              field="beta1")
        if self.train_on_val and self.patience:
            raise ConfigError("Early stopping needs held-out validation images; turn off "
                              f"'{SETTINGS['train_on_val'].label}'.", field="patience")
        if self.dp:
            from core.training.privacy import check_private_config

            check_private_config(self)

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
        reject_unknown(cls, values, "setting")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- presets -------------------------------------------------------------------------------
# Each preset says where its numbers come from; `floor` is the test accuracy it must reach (the article's
# claims for the seed models), checked by benchmarks/presets.py.
PRESETS: dict[str, dict[str, Any]] = {
    "seed-mlp": {
        "floor": 0.97,  # test accuracy the preset must reach (benchmarks/presets.py prints PASS/FAIL)
        "summary": "The article's MLP: 784-128-10, sigmoid, plain SGD lr 0.01, batch 100; 300 epochs "
                   "(plain SGD at this rate first reaches 97% on the test set at about epoch 160).",
        "config": dict(model="seed-mlp", optimizer="sgd", lr=0.01, batch_size=100, epochs=300),
    },
    "seed-cnn": {
        "floor": 0.989,  # test accuracy the preset must reach (benchmarks/presets.py prints PASS/FAIL)
        "summary": "The article's Keras CNN: 3 convs, 2 dense, ReLU, Adam, 5 epochs, batch 64, trained on all "
                   "60,000 images as Keras's model.fit did (validation curves then show training images).",
        "config": dict(model="seed-cnn", optimizer="adam", lr=1e-3, batch_size=64, epochs=5, train_on_val=True),
    },
    "fast": {
        "floor": 0.99,  # test accuracy the preset must reach (benchmarks/presets.py prints PASS/FAIL)
        "summary": "Quickest route to 99% on a CPU: the speed CNN, after the best public speed-run recipe, for one "
                   "epoch over all 60,000 training images, batch 256, one-cycle Adam lr 0.01 with β = (0.7, 0.9).",
        "config": dict(model="speed-cnn", optimizer="adam", lr=1e-2, beta1=0.7, beta2=0.9, schedule="onecycle",
                       batch_size=256, epochs=1, train_on_val=True),
    },
    "best": {
        "floor": 0.995,  # test accuracy the preset must reach (benchmarks/presets.py prints PASS/FAIL)
        "summary": "Highest accuracy: residual CNN, augmentation, one-cycle AdamW, label smoothing, 20 epochs over "
                   "all 60,000 training images (validation curves then show training images); about 6.5 min on 2 "
                   "CPU cores with AMX (bf16), 12-21 min in fp32. Five seeds averaged reach 99.73%.",
        "config": dict(model="resnet", optimizer="adamw", lr=4e-3, schedule="onecycle", batch_size=128,
                       epochs=20, weight_decay=5e-4, label_smoothing=0.1, dropout=0.1, augment=True,
                       rotate_deg=10.0, scale=0.1, translate_px=2.0, train_on_val=True),
    },
    "starter": {
        "floor": 0.993,  # test accuracy the preset must reach (benchmarks/presets.py prints PASS/FAIL)
        "summary": "The shipped model's recipe: small ResNet trained with drawing-like augmentation (pen width, "
                   "rotation, zoom, shift) so mouse drawings are read as well as MNIST. The shipped model also "
                   "learns from generated drawings and typed fonts, for 8 epochs (scripts/train_starter.py).",
        "config": dict(model="resnet", optimizer="adamw", lr=4e-3, schedule="onecycle", batch_size=128, epochs=5,
                       weight_decay=5e-4, label_smoothing=0.1, dropout=0.1, augment=True, rotate_deg=15.0,
                       scale=0.15, translate_px=2.5, stroke=0.8),
    },
    "robust": {
        "floor": 0.98,  # clean test accuracy the preset must reach; its PGD accuracy is recorded as robust_accuracy
        "summary": "Adversarially trained seed CNN: every batch attacked with FGSM from a random start (Wong et al., "
                   "'Fast is better than free'), ε = 0.1, one-cycle Adam, 2 epochs over all 60,000 images.",
        "config": dict(model="seed-cnn", optimizer="adam", lr=3e-3, schedule="onecycle", batch_size=128, epochs=2,
                       train_on_val=True, adversarial="fgsm", adv_eps=0.1),
    },
    "private": {
        "floor": 0.97,  # test accuracy the preset must reach at ε = 3, δ = 1e-5
        "summary": "Differentially private training (DP-SGD with Opacus) of the small tanh CNN built for it: (ε = 3, "
                   "δ = 1e-5) over all 60,000 images, Poisson batches of 512 on average, per-image clip 0.1, SGD lr 1 "
                   "with momentum 0.9, 10 epochs (Papernot et al. 2021; Tramèr & Boneh 2021).",
        "config": dict(model="dp-cnn", optimizer="sgd", lr=1.0, momentum=0.9, batch_size=512, epochs=10,
                       train_on_val=True, dp=True, target_epsilon=3.0, delta=1e-5, max_grad_norm=0.1),
    },
}


@dataclass(frozen=True)
class RunPlan:
    """A run's size, from its config and the dataset's split sizes: the one place these are computed."""

    train_images: int  # images per epoch, after train_size and train_on_val
    steps_per_epoch: int
    total_steps: int  # after max_steps
    epochs: int
    batch_size: int

    @property
    def images(self) -> int:
        """Training images processed over the whole run (the last batch of an epoch may be short)."""
        per_epoch = min(self.steps_per_epoch * self.batch_size, self.train_images)
        full_epochs, extra_steps = divmod(self.total_steps, self.steps_per_epoch)
        return full_epochs * per_epoch + extra_steps * self.batch_size


def plan(cfg: TrainConfig, sizes: dict[str, int]) -> RunPlan:
    """How many images, steps per epoch and steps in all `cfg` trains for, given `Splits.sizes()` (plus, optionally,
    "drawings": the images in the drawing set's train half, else counted in $DIGIT_LAB_HOME's drawing store)."""
    used = min(sizes["train"], cfg.train_size or sizes["train"])
    if cfg.per_class:
        used = min(used, cfg.per_class * 10)  # every dataset here has 10 classes
    drawings = 0
    if cfg.drawings:  # the set's train half, counted from the store unless the caller already loaded it
        from core.data.drawing_parts import train_part_size

        drawings = sizes["drawings"] if "drawings" in sizes else train_part_size(cfg.drawings)
    images = (used + (sizes["val"] if cfg.train_on_val else 0) + drawings * cfg.drawings_factor) * cfg.repeat
    per_epoch = math.ceil(images / cfg.batch_size)
    if cfg.limit_batches:
        per_epoch = min(per_epoch, cfg.limit_batches)
    total = per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    return RunPlan(images, per_epoch, total, cfg.epochs, cfg.batch_size)


def advice(cfg: TrainConfig, run: RunPlan) -> list[str]:
    """Warnings about valid but doubtful combinations, shown before a run starts."""
    notes = []
    if cfg.optimizer in ("adam", "adamw") and cfg.lr > 0.05:
        notes.append(f"A learning rate of {cfg.lr:g} is very high for {cfg.optimizer}; 1e-3 to 5e-3 is usual. "
                     "The run will likely diverge.")
    if cfg.optimizer == "sgd" and cfg.lr > 1.0:
        notes.append(f"A learning rate of {cfg.lr:g} with SGD will likely diverge; 0.01 to 0.1 is usual.")
    if cfg.batch_size > run.train_images:
        notes.append(f"The batch size ({cfg.batch_size:,}) is larger than the training images used "
                     f"({run.train_images:,}): each epoch is a single step.")
    if cfg.model == "seed-mlp" and cfg.augment and cfg.rotate_deg > 20:
        notes.append("Strong rotation hurts a small MLP more than it helps.")
    if cfg.l1 > 1e-3:
        notes.append(f"An L1 penalty of {cfg.l1:g} summed over all weights dominates the loss; try 1e-5 to 1e-4.")
    if cfg.dropout and cfg.model == "seed-mlp" and cfg.dropout > 0.5:
        notes.append("Dropout above 0.5 on a 128-unit layer leaves little capacity.")
    if cfg.dp and cfg.delta >= 1 / run.train_images:
        notes.append(f"A privacy δ of {cfg.delta:g} is not small against {run.train_images:,} training images: "
                     f"δ should stay well below 1/N = {1 / run.train_images:.1e}, or one image may leak outright.")
    if cfg.train_on_val and (cfg.train_size or cfg.per_class):
        notes.append(f"The validation images join the training images chosen ('Also train on the validation images' "
                     f"is on): each epoch trains on {run.train_images // cfg.repeat:,} images, not only those chosen. "
                     "Turn it off to train on the chosen images alone.")
    if cfg.precision == "bf16" and cfg.model == "vit-tiny":
        notes.append("bf16 is slower than fp32 for the tiny ViT on the CPUs measured (0.37× with AMX); keep auto or fp32 "
                     "unless on a GPU.")
    return notes

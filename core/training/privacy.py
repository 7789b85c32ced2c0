"""Differentially private training (DP-SGD) with Opacus, on our device-resident data and index-slice batches.

`check_private_config(cfg)` refuses combinations DP-SGD cannot account for (TrainConfig calls it when `dp` is on);
`train()` enters `private_training(cfg, model, optimizer, n_train, total_steps)` and uses its `module`,
`optimizer` and `sample(...)`; `session.epsilon()` is the ε spent so far. `epsilon_for(...)` is Opacus's own
figure for the same settings, for checking.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator

import torch

from core.errors import ConfigError

ACCOUNTANT = "rdp"  # Opacus's Rényi-DP accountant; the noise multiplier is computed with the same one


@functools.lru_cache(maxsize=None)
def private_model_problem(model_name: str) -> str | None:
    """Why zoo model `model_name` cannot be trained with DP-SGD, in a sentence; None when it can."""
    from opacus.validators import ModuleValidator

    from core.models.zoo import build_model

    with torch.random.fork_rng():
        errors = ModuleValidator.validate(build_model(model_name), strict=False)
    if not errors:
        return None
    text = " ".join(str(e) for e in errors)
    if "BatchNorm" in text:
        return (f"{model_name} uses BatchNorm, which mixes the images of a batch so no single image's influence "
                "can be bounded; Opacus would swap it for GroupNorm, but then the weights no longer fit the zoo's "
                f"{model_name}. Use dp-cnn, seed-cnn or seed-mlp for private training.")
    return (f"Opacus cannot train {model_name} privately ({errors[0]}); use dp-cnn, seed-cnn or seed-mlp for private "
            "training.")


def check_private_config(cfg) -> None:
    """Raise a ConfigError when `cfg` asks for DP-SGD with something its privacy accounting cannot cover."""
    problem = private_model_problem(cfg.model)
    if problem:
        raise ConfigError(problem, field="model")
    if cfg.adversarial != "none":
        raise ConfigError("Adversarial training and differential privacy cannot be combined here: attacking "
                          "a batch would pass through the per-image gradient hooks. Choose one.", field="adversarial")
    if cfg.focus_errors:
        raise ConfigError("Focusing on hard images changes how often each image is drawn, which the privacy "
                          "accounting (uniform Poisson sampling) cannot cover; set it to 0 for DP.",
                          field="focus_errors")
    if cfg.init_from:
        raise ConfigError("Private training starts from fresh weights: a model already trained without privacy "
                          "on these images would leak them whatever ε says.", field="init_from")
    if cfg.l1:
        raise ConfigError("An L1 penalty adds a gradient that DP-SGD's clipping and noise do not cover; use "
                          "weight decay instead for DP.", field="l1")
    if cfg.precision == "bf16":  # auto resolves to fp32 for private runs
        raise ConfigError("Private training runs in fp32 (per-image gradients in bf16 are untested here).",
                          field="precision")


def noise_multiplier_for(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Opacus's noise multiplier σ that spends `target_epsilon` in `steps` steps at `sample_rate`."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=ACCOUNTANT))


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The ε that Opacus's accountant reports for `steps` DP-SGD steps with these settings."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    return float(accountant.get_epsilon(delta))


@dataclass
class PrivateSession:
    """The wrapped model and optimiser of one DP-SGD run, its accountant, and Poisson sampling."""

    module: torch.nn.Module  # opacus GradSampleModule around the model (per-image gradients)
    optimizer: torch.optim.Optimizer  # opacus DPOptimizer around the run's optimiser (clip, noise)
    accountant: object  # opacus RDPAccountant, stepped by the optimiser
    sample_rate: float  # q: each image joins a step's batch with this probability
    noise_multiplier: float  # σ, computed for the target ε
    delta: float

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of one Poisson-sampled batch: each of `n` images independently with probability q."""
        keep = torch.rand(n, generator=generator, device=generator.device) < self.sample_rate
        return keep.nonzero().squeeze(1)

    def epsilon(self) -> float:
        """The ε spent so far (0 before the first step)."""
        return float(self.accountant.get_epsilon(self.delta)) if self.accountant.history else 0.0

    @property
    def steps(self) -> int:
        return sum(h[2] for h in self.accountant.history)


@contextlib.contextmanager
def private_training(cfg, model: torch.nn.Module, optimizer: torch.optim.Optimizer, n_train: int,
                     total_steps: int, device: torch.device) -> Iterator[PrivateSession]:
    """Wrap `model` and `optimizer` for DP-SGD for the run's length; the hooks come off the model on exit."""
    from opacus import GradSampleModule
    from opacus.accountants import RDPAccountant
    from opacus.optimizers import DPOptimizer

    sample_rate = min(cfg.batch_size / n_train, 1.0)
    sigma = noise_multiplier_for(cfg.target_epsilon, cfg.delta, sample_rate, total_steps)
    module = GradSampleModule(model, loss_reduction="mean")
    noise = torch.Generator(device=device).manual_seed(cfg.seed * 7_919 + 1)
    dp_optimizer = DPOptimizer(optimizer, noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm,
                               expected_batch_size=max(1, round(sample_rate * n_train)),  # q·N: the mean's divisor
                               loss_reduction="mean", generator=noise)
    accountant = RDPAccountant()
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    try:
        yield PrivateSession(module, dp_optimizer, accountant, sample_rate, sigma, cfg.delta)
    finally:
        module._close()  # removes the hooks and the grad_sample attributes from the model's parameters

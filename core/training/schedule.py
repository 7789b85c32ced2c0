"""Learning-rate schedules: constant, step, cosine and one-cycle, as pure functions of the step."""
from __future__ import annotations

import math

from core.training.config import RunPlan, TrainConfig


# Ours, not torch's schedulers: a pure function of the step means a resumed run gets exactly the same
# rates with no scheduler state to save. tests/test_schedule.py checks it against StepLR,
# CosineAnnealingLR and OneCycleLR over whole runs.
def lr_at(cfg: TrainConfig, step: int, total_steps: int, per_epoch: int) -> float:
    """The learning rate for optimiser step `step` (0-based): a pure function, so resume needs no state."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** (step // (per_epoch * cfg.step_every))
    progress = min(step / max(total_steps, 1), 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    # onecycle: cosine warm-up from lr/25 to lr, then cosine anneal to (lr/25)/1e4, as torch's OneCycleLR
    # (div_factor=25, final_div_factor=1e4); torch peaks one step earlier, at step warmup_fraction*total - 1.
    warm = cfg.warmup_fraction
    if progress < warm:
        return _cos_between(cfg.lr / 25, cfg.lr, progress / warm)
    return _cos_between(cfg.lr, cfg.lr / 25 / 1e4, (progress - warm) / max(1 - warm, 1e-9))


def lr_curve(cfg: TrainConfig, run: RunPlan, points: int = 200) -> tuple[list[int], list[float]]:
    """The whole schedule, sampled at about `points` steps (for plotting before a run)."""
    total = run.total_steps
    steps = sorted(set(range(0, total, max(1, total // points))) | {max(total - 1, 0)})
    return steps, [lr_at(cfg, s, total, run.steps_per_epoch) for s in steps]


def _cos_between(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))

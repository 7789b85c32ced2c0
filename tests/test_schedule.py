"""`lr_at` (a pure function of the step, so resume needs no scheduler state) follows torch's own schedulers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.training.config import TrainConfig
from core.training.schedule import lr_at

PER_EPOCH = 37  # steps per epoch; odd on purpose, so phase boundaries fall between epochs
EPOCHS = 6
TOTAL = PER_EPOCH * EPOCHS


def _torch_lrs(make_scheduler, lr: float, total: int) -> list[float]:
    """The learning rate torch uses for each optimiser step: read before the step, scheduler stepped after."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _ours(cfg: TrainConfig, total: int = TOTAL, per_epoch: int = PER_EPOCH) -> list[float]:
    return [lr_at(cfg, s, total, per_epoch) for s in range(total)]


@pytest.mark.parametrize("step_every, gamma", [(1, 0.5), (2, 0.1)])
def test_step_schedule_matches_torch_steplr(step_every, gamma):
    cfg = TrainConfig(lr=0.1, schedule="step", step_every=step_every, step_gamma=gamma)
    expected = _torch_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, PER_EPOCH * step_every, gamma), 0.1, TOTAL)
    np.testing.assert_allclose(_ours(cfg), expected, rtol=1e-9, atol=0)


def test_cosine_schedule_matches_torch_cosineannealinglr():
    cfg = TrainConfig(lr=3e-3, schedule="cosine")
    expected = _torch_lrs(lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=TOTAL), 3e-3, TOTAL)
    np.testing.assert_allclose(_ours(cfg), expected, rtol=1e-6, atol=3e-3 * 1e-9)


def _onecycle(total: int, pct_start: float, max_lr: float = 4e-3):
    return lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=total, pct_start=pct_start, anneal_strategy="cos", div_factor=25,
        final_div_factor=1e4, three_phase=False, cycle_momentum=False)


@pytest.mark.parametrize("total, warmup", [(TOTAL, 0.3), (938, 0.2), (1_000, 0.25)])
def test_onecycle_schedule_matches_torch_onecyclelr_within_one_step(total, warmup):
    # torch peaks at step warmup*total - 1 and reaches its floor at the last step; ours one step later
    # (peak at warmup*total). One step of the steepest part of the warm-up bounds the difference.
    cfg = TrainConfig(lr=4e-3, schedule="onecycle", warmup_fraction=warmup)
    expected = _torch_lrs(_onecycle(total, warmup), 4e-3, total)
    one_step = 4e-3 * (np.pi / 2) / (warmup * total - 1)  # < 2.5% of the peak here
    np.testing.assert_allclose(_ours(cfg, total), expected, rtol=0, atol=one_step)
    assert np.argmax(_ours(cfg, total)) - np.argmax(expected) in (0, 1)


@pytest.mark.parametrize("total, warmup", [(TOTAL, 0.2), (TOTAL, 0.3), (1_000, 0.25), (50, 0.1)])
def test_onecycle_schedule_is_torchs_onecyclelr_shifted_by_one_step(total, warmup):
    # The exact relation: torch over total+1 steps with its peak at step warmup*total gives our curve,
    # so the shape, peak (lr), start (lr/25) and floor ((lr/25)/1e4) are torch's to float precision.
    cfg = TrainConfig(lr=4e-3, schedule="onecycle", warmup_fraction=warmup)
    expected = _torch_lrs(_onecycle(total + 1, (warmup * total + 1) / (total + 1)), 4e-3, total)
    np.testing.assert_allclose(_ours(cfg, total), expected, rtol=1e-7, atol=0)


def test_constant_schedule_never_changes():
    assert set(_ours(TrainConfig(lr=0.02, schedule="constant"))) == {0.02}

"""Each training step's figures (loss, images right) read from the device to the host in groups, not one by one.

A read of a tensor's value makes the host wait until the device has run everything queued before it. On a CPU that
costs nothing, so core.training.train reads every step and judges a diverged step before its update; on a GPU the
step loop would stall at every step, so the figures stay on the device and are read READ_BACK_EVERY steps at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from core.training.distributed import Ranks

READ_BACK_EVERY = 32  # steps between reading a GPU's loss and accuracy figures back to the host


@dataclass
class PendingStep:
    """One optimiser step's figures, still on the training device until they are read back."""

    number: int  # 1-based step of the run
    batch: int  # 0-based batch of the epoch
    lr: float
    loss: torch.Tensor  # the batch's mean loss (0-d)
    correct: torch.Tensor  # how many images the model got right (0-d)
    images: int


def read_back_every(device: torch.device) -> int:
    """Steps whose figures stay on the device between two read-backs. On a CPU every step is read (a read costs
    nothing, and a diverged step is caught before it touches the weights); on a GPU every read makes the host wait
    for the device's queue to drain, so figures are read in groups and up to that many steps run after a bad one."""
    return 1 if device.type == "cpu" else READ_BACK_EVERY


def step_figures(steps: list[PendingStep], ranks: Ranks | None,
                 stop: bool) -> tuple[list[tuple[float, int, int]], bool]:
    """Each step's (mean loss, images, correct), read to the host in one sync; under torchrun summed over the ranks
    in one all-reduce (the whole batches' figures), with whether any rank was asked to stop."""
    if not steps:
        return [], stop
    loss = torch.stack([s.loss for s in steps]).double()
    correct = torch.stack([s.correct for s in steps]).double()
    if ranks is not None:  # the image counts go to the device only to be summed over the ranks
        images = torch.tensor([float(s.images) for s in steps], dtype=torch.float64, device=loss.device)
        return ranks.step_totals(torch.stack([loss, images, correct], 1), stop)
    figures = torch.stack([loss, correct], 1).tolist()  # the one read to the host
    return [(loss_value, s.images, int(c)) for s, (loss_value, c) in zip(steps, figures)], stop

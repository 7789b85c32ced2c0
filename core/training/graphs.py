"""A GPU run's training steps replayed from one CUDA graph instead of launched kernel by kernel.

A small model's step on a data-centre GPU is bound by the host, not the GPU: Python launches each of the step's
kernels (forward, loss, backward, optimiser) one at a time, and the GPU waits between them. Measured on an H200,
the `fast` preset's step took about 2 ms for work the GPU does in a fraction of that. A CUDA graph records the step's
kernels once and launches them all with one call (PyTorch's "whole-network capture": torch.cuda.graph).

`GraphedStep` takes a run's full-size batches: the first WARMUP_STEPS run as ordinary steps on a side stream (they
are real steps of the run, on real batches; they create the optimiser's state and let cuDNN and cuBLAS set up before
anything is recorded), the next is captured and every later one replayed. A batch of another size (an epoch's last,
ragged one) runs as an ordinary step. The learning rate lives in a tensor on the device, which each step fills, so
the schedule still applies to the replayed optimiser.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch

from core.training.config import TrainConfig

WARMUP_STEPS = 3  # ordinary steps, on a side stream, before the step is captured
log = logging.getLogger(__name__)
StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> [loss, images right], after the update


def graphable(cfg: TrainConfig, device: torch.device, *, private: bool, attacked: bool, distributed: bool) -> bool:
    """Whether `cfg`'s steps can be replayed from a CUDA graph: on a CUDA device, with Adam or AdamW (the optimisers
    whose fused kernel takes the learning rate as a device tensor), outside DP-SGD (its per-image gradients and
    Poisson batches change shape every step), adversarial training (an attack inside the step) and torchrun
    (DistributedDataParallel's all-reduces). DIGIT_LAB_CUDA_GRAPHS=0 turns graphs off: every step is launched as
    before."""
    switched_on = os.environ.get("DIGIT_LAB_CUDA_GRAPHS", "1") != "0"
    return (switched_on and device.type == "cuda" and cfg.optimizer in ("adam", "adamw") and not private
            and not attacked and not distributed)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The learning rate of every group; a graphed run's lives in a device tensor, filled in place for the replay."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class GraphedStep:
    """Training steps of `batch_size` images through `step` (forward, loss, backward and the optimiser's update,
    returning the step's [loss, images right] on the device), captured once and replayed."""

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer, batch_size: int, device: torch.device):
        self.step, self.optimizer, self.batch_size = step, optimizer, batch_size
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = 0
        for group in optimizer.param_groups:  # the schedule writes into these; a replay reads them
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        self.static: tuple[torch.Tensor, ...] = ()  # the graph's input batch and output figures
        self.grads: list[torch.Tensor | None] = []  # the gradients the graph writes, kept alive with it
        self.replays = 0  # steps taken by replaying the graph
        self.failure = ""  # why the step could not be recorded; every step is then an ordinary one

    def fits(self, x: torch.Tensor) -> bool:
        """Whether this batch can take the graphed path: a full-size batch (an epoch's ragged last cannot), while
        recording has not failed."""
        return len(x) == self.batch_size and not self.failure

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One training step on a full-size batch at learning rate `lr`; the step's [loss, images right]."""
        set_lr(self.optimizer, lr)
        if self.graph is None and self.warmed < WARMUP_STEPS:
            self.warmed += 1
            return self._on_side_stream(x, y)
        if self.graph is None:
            try:
                self._capture(x, y)
            except RuntimeError as error:  # an op that cannot be recorded: the run goes on without a graph
                self.failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                log.warning("CUDA graph capture failed, training on without it: %s", self.failure)
                self.optimizer.zero_grad(set_to_none=True)  # nothing recorded is kept
                return self.step(x, y)
        static_x, static_y, figures = self.static
        static_x.copy_(x)
        static_y.copy_(y)
        self.graph.replay()
        self.replays += 1
        return figures.clone()  # the next replay overwrites the graph's own

    def _on_side_stream(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            self.optimizer.zero_grad(set_to_none=True)
            figures = self.step(x, y)
        current.wait_stream(self.stream)
        figures.record_stream(current)
        return figures

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record one step on the graph's input tensors. Nothing runs while recording: the caller replays it."""
        static_x, static_y = x.clone(), y.clone()
        torch.cuda.current_stream().synchronize()  # once per run: the warm-up's work is done before recording
        self.optimizer.zero_grad(set_to_none=True)  # backward then makes gradients in the graph's own memory
        groups = self.optimizer.param_groups
        for group in groups:  # the optimiser refuses to be recorded unless told it may be
            group["capturable"] = True
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: another thread's CUDA work (a page's prediction in the same server) is not disturbed
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                figures = self.step(static_x, static_y)
        finally:
            for group in groups:  # a fused optimiser keeps its step count on the device either way
                group["capturable"] = False
        self.grads = [p.grad for group in groups for p in group["params"]]
        self.static, self.graph = (static_x, static_y, figures), graph

    def release(self) -> None:
        """Let go of the graph and its memory once the run is over (the weights' gradients pointed into it)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.graph, self.static, self.grads = None, (), []

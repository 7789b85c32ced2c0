"""Data-parallel training under `torchrun`: one process per device, each on its shard of every batch.

`torchrun --nproc_per_node=2 --master_addr=127.0.0.1 -m core.cli train --preset fast` starts N copies of the CLI;
`Ranks.from_env()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) and joins the process group (NCCL on
GPUs, gloo on CPUs). Every rank holds the whole dataset on its device and draws the same shuffled order; batch b's
images are split across the ranks (rank r takes every N-th image from r), the model is wrapped in
DistributedDataParallel, so the averaged gradient is the gradient of the whole batch: a run trains as the
single-process run with the same settings would, up to BatchNorm statistics (computed per shard) and rounding.
Only rank 0 writes to the run store (record, metrics, checkpoints, weights); the others train and exit.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator
import torch
import torch.distributed as dist

from core.training.devices import usable_cores

TIMEOUT = timedelta(minutes=10)  # a collective that waits longer than this means a rank died: fail, never hang


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes to the run store and prints."""
        return self.rank == 0

    @staticmethod
    def from_env(requested_device: str = "auto") -> "Ranks | None":
        """The ranks torchrun started, with the process group joined; None outside torchrun (or with one process)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and requested_device in ("auto", "cuda")
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
            # torchrun sets OMP_NUM_THREADS=1 when it starts several processes; otherwise share the cores.
            if "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
        return Ranks(rank, world, local_rank, device)

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's part of a batch's indices: every `world`-th from `rank`."""
        return indices[self.rank::self.world]

    def step_totals(self, table: torch.Tensor, stop: bool) -> tuple[list[tuple[float, int, int]], bool]:
        """One all-reduce for a group of steps: this rank's rows (mean loss, images, correct) of its shards become
        the whole batches' rows; and whether any rank was asked to stop (every rank then stops at the same step)."""
        loss, images, correct = table.double().unbind(1)
        flag = torch.tensor([float(stop)], dtype=torch.float64, device=table.device)
        t = torch.cat([torch.stack([loss * images, images, correct], 1).flatten(), flag]).to(self.device)
        dist.all_reduce(t)
        values = t.tolist()  # the one read to the host
        rows = [(values[i] / max(values[i + 1], 1), int(values[i + 1]), int(values[i + 2]))
                for i in range(0, len(values) - 1, 3)]
        return rows, values[-1] > 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as DistributedDataParallel (it averages gradients across ranks in backward)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def share(self, text: str = "") -> str:
        """Rank 0's `text` on every rank (the id of the run rank 0 created, or its refusal): sent as bytes in a
        tensor, never pickled."""
        data = torch.tensor(list(text.encode()) if self.main else [], dtype=torch.uint8)
        size = torch.tensor([len(data)], dtype=torch.int64)
        on = self.device if self.device.type == "cuda" else torch.device("cpu")
        size = size.to(on)
        dist.broadcast(size, src=0)
        buffer = data.to(on) if self.main else torch.empty(int(size.item()), dtype=torch.uint8, device=on)
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().tolist()).decode()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def torchrun_ranks(device: str = "auto") -> Iterator[Ranks | None]:
    """The torchrun ranks, or None in a plain process; the process group is left on the way out."""
    ranks = Ranks.from_env(device)
    try:
        yield ranks
    finally:
        if ranks:
            ranks.close()


def announce_run(ranks: Ranks | None, make_run: Callable[[], str]) -> str:
    """Rank 0 (or a plain process) makes or checks the run and returns its id; under torchrun the other ranks learn
    that id, or that it was refused (`wait_for_run` then gives None and they exit as rank 0 does)."""
    try:
        run_id = make_run()
    except Exception as error:
        if ranks:
            ranks.share(f"error:{error}")
        raise
    if ranks:
        ranks.share(f"run:{run_id}")
    return run_id


def wait_for_run(ranks: Ranks) -> str | None:
    """On ranks other than 0: the id of the run rank 0 announced, or None when rank 0 refused it."""
    answer = ranks.share()
    return answer.removeprefix("run:") if answer.startswith("run:") else None

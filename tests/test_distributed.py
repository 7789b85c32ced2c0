"""torchrun: two CPU processes with gloo train a run as one process would, only rank 0 writes, and resume works."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import torch

from core.storage import load_tensors
from core.training.config import TrainConfig
from core.training.experiment import create_run, execute_run

# seed-cnn (no BatchNorm, no dropout) on the built-in digits: the sharded batches then average to exactly the
# single-process gradient, so the two runs may differ only by rounding. In fp32: under precision auto a CPU with AMX
# trains the seed CNN in bf16, whose rounding of half batches moved the weights by 0.07 (measured on a Xeon).
SETTINGS = dict(model="seed-cnn", dataset="digits", batch_size=32, epochs=2, seed=3, schedule="onecycle", lr=3e-3,
                precision="fp32")
FLAGS = ["--model", "seed-cnn", "--dataset", "digits", "--batch-size", "32", "--epochs", "2", "--seed", "3",
         "--schedule", "onecycle", "--lr", "0.003", "--precision", "fp32"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(store, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "core.cli", *args, "--json"]
    env = {**os.environ, "DIGIT_LAB_HOME": str(store.root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _weights(store, run_id: str) -> dict[str, torch.Tensor]:
    return load_tensors(store.weights_path(run_id))[0]


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@contextlib.contextmanager
def _one_thread():
    """One torch thread, as each torchrun rank has (OMP_NUM_THREADS=1); the count is put back afterwards, because
    later tests compare this process's runs with other processes' bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_two_gloo_processes_train_like_one_and_resume_a_stopped_run(store):
    with _one_thread():
        single = execute_run(store, create_run(store, TrainConfig(**SETTINGS), name="one process").id)
    assert single.status == "completed"

    done = _torchrun(store, "train", *FLAGS, "--name", "two processes")
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]  # rank 0 alone prints
    ddp = store.get(line["run_id"])
    assert ddp.status == "completed" and ddp.timings["processes"] == 2
    assert ddp.timings["images"] == single.timings["images"]  # every image once per epoch, across both shards
    assert len(store.list()) == 2  # rank 1 created nothing
    assert _max_difference(_weights(store, single.id), _weights(store, ddp.id)) < 1e-4
    assert abs(ddp.metrics["test_accuracy"] - single.metrics["test_accuracy"]) <= 0.002

    # Stopped after its first epoch in one process, then finished by two: the same model again
    stopped_id = create_run(store, TrainConfig(**SETTINGS), name="stopped, resumed by torchrun").id
    epochs: list[int] = []
    with _one_thread():
        stopped = execute_run(store, stopped_id, should_stop=lambda: bool(epochs),
                              on_event=lambda e: e["type"] == "epoch" and epochs.append(e["epoch"]))
    assert stopped.status == "cancelled" and epochs == [1]
    resumed = _torchrun(store, "resume", stopped_id)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    finished = store.get(stopped_id)
    assert finished.status == "completed" and [r["epoch"] for r in store.read_metrics(stopped_id)] == [1, 2]
    assert _max_difference(_weights(store, single.id), _weights(store, stopped_id)) < 1e-4


def test_a_refused_resume_stops_every_rank_with_the_bad_input_code(store):
    run = execute_run(store, create_run(store, TrainConfig(**{**SETTINGS, "epochs": 1})).id)
    refused = _torchrun(store, "resume", run.id)  # completed runs do not resume
    assert refused.returncode != 0
    assert "only" in refused.stderr and "runs resume" in refused.stderr


def test_a_group_of_steps_is_summed_in_one_all_reduce(monkeypatch):
    # A GPU reads its figures back every few steps; under torchrun a group's rows go through one all-reduce.
    # One gloo process here: the rows come back as they went in (the mean loss weighted by images), with the flag.
    import torch.distributed as dist

    from core.training.distributed import Ranks

    calls = []
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: calls.append(t.numel()) or real(t, *a, **k))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        ranks = Ranks(0, 1, 0, torch.device("cpu"))
        table = torch.tensor([[0.25, 32, 20], [1.5, 16, 3], [2.0, 0, 0]], dtype=torch.float64)
        rows, stop = ranks.step_totals(table, True)
        assert rows == [(0.25, 32, 20), (1.5, 16, 3), (0.0, 0, 0)] and stop is True
        assert ranks.step_totals(table[:1], False) == ([(0.25, 32, 20)], False)
        assert calls == [10, 4]  # three steps and the stop flag in one all-reduce; then one step
    finally:
        dist.destroy_process_group()


def test_ranks_read_back_in_groups_stop_together_and_report_every_step_taken(digits, monkeypatch):
    # Under torchrun the ranks learn of a stop when they read a group back (one gloo process here): the step being
    # read is dropped (its update never happens), every earlier step is reported and counted.
    import torch.distributed as dist

    from core.training import train as train_module
    from core.training.distributed import Ranks

    monkeypatch.setattr(train_module, "read_back_every", lambda device: 4)
    cfg = TrainConfig(**{**SETTINGS, "epochs": 1})
    asked, events = [], []
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        outcome = train_module.train(cfg, digits, on_event=events.append, ranks=Ranks(0, 1, 0, torch.device("cpu")),
                                     should_stop=lambda: asked.append(1) or len(asked) >= 3)  # at the third read
    finally:
        dist.destroy_process_group()
    assert outcome.status == "cancelled" and len(asked) == 3
    assert outcome.state.step == 11 and outcome.state.images == 11 * 32  # steps 1-11; step 12 was being read
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, 12))

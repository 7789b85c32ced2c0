"""A crash never strands a run: kill -9 and signals, owner leases that survive pid reuse, crash-safe checkpoints,
and one trainer per run folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core import ownership
from core.cli import main
from core.errors import DigitLabError
from core.ownership import Lease, train_lock
from core.runs import RESUMABLE
from core.storage import load_tensors
from core.training import experiment
from core.training.experiment import create_run, execute_run
from core.training.jobs import JobManager

# seed-cnn on the built-in digits: 162 steps an epoch at batch 16 with two passes, a few seconds on a CPU core
CLI_RUN = ["--model", "seed-cnn", "--dataset", "digits", "--batch-size", "16", "--repeat", "2", "--seed", "5"]


def _wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the CLI exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _cli_train(store, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.cli", "train", *CLI_RUN, *flags, "--json"],
                            env={**os.environ, "DIGIT_LAB_HOME": str(store.root)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _only_run(store) -> Path | None:
    folders = list(store.runs_dir.glob("*/meta.json"))
    return folders[0].parent if folders else None


def _checkpoint_epoch(folder: Path | None) -> int:
    try:
        return json.loads((folder / "checkpoint.json").read_text())["epoch"]
    except (TypeError, OSError, ValueError, KeyError):
        return 0


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# -- kill -9 and signals through the CLI --------------------------------------------------------------
def test_a_cli_run_killed_mid_epoch_shows_interrupted_and_resumes_to_the_same_result(store, capsys):
    proc = _cli_train(store, "--epochs", "3")
    folder = _wait_for(lambda: (f := _only_run(store)) and _checkpoint_epoch(f) == 1 and f, proc)
    proc.kill()  # SIGKILL: no handler runs, nothing is cleaned up
    proc.wait(timeout=30)
    proc.stdout.close(), proc.stderr.close()
    run_id = folder.name
    assert len(store.read_metrics(run_id)) == 1  # killed during epoch 2
    assert store.get(run_id).status == "running"  # as the dead process left it

    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["status"]) for r in listed] == [(run_id, "interrupted")]
    assert main(["resume", run_id, "--json"]) == 0
    resumed = _last_json(capsys)
    assert resumed["status"] == "completed"
    assert [r["epoch"] for r in store.read_metrics(run_id)] == [1, 2, 3]

    assert main(["train", *CLI_RUN, "--epochs", "3", "--json"]) == 0
    straight = _last_json(capsys)
    assert abs(resumed["test_accuracy"] - straight["test_accuracy"]) <= 0.001
    assert _same(load_tensors(store.weights_path(run_id))[0], load_tensors(store.weights_path(straight["run_id"]))[0])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_cli_run_as_cancelled(store, sig):
    proc = _cli_train(store, "--epochs", "50")
    folder = _wait_for(lambda: (f := _only_run(store)) and json.loads((f / "meta.json").read_text())["status"]
                       == "running" and f, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads(out.strip().splitlines()[-1])
    record = store.get(folder.name)
    assert summary["status"] == record.status == "cancelled" and record.status in RESUMABLE
    assert record.owner is None


# -- owner leases ---------------------------------------------------------------------------------------
def test_an_owner_lease_is_alive_only_for_the_same_pid_start_time_and_boot(monkeypatch):
    lease = Lease.mine()
    assert lease.pid == os.getpid() and lease.alive()
    if sys.platform.startswith("linux"):
        assert lease.start is not None and lease.boot
    real_start = ownership.process_start
    monkeypatch.setattr(ownership, "process_start", lambda pid: (real_start(pid) or 0) + 1)  # pid reused later
    assert not lease.alive()
    monkeypatch.setattr(ownership, "process_start", real_start)
    monkeypatch.setattr(ownership, "boot_id", lambda: "another-boot")  # a restarted machine
    assert not lease.alive()
    monkeypatch.undo()
    assert lease.alive()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_lease = Lease.of(child.pid)
    child.wait()
    assert not child_lease.alive()


def test_a_run_whose_owner_pid_was_reused_is_recovered_and_can_be_deleted(store, tiny_cfg):
    me = Lease.mine()
    reused = create_run(store, tiny_cfg)
    store.update(reused.id, status="running", owner=Lease(me.pid, (me.start or 0) + 1, me.boot))  # our pid, not us
    other = create_run(store, tiny_cfg)
    store.update(other.id, status="queued", owner=Lease.of(os.getppid()))  # e.g. a server that queued it
    mine = create_run(store, tiny_cfg)  # created here: this process owns the queued run
    assert mine.owner == me
    assert store.recover_interrupted() == [reused.id]
    assert store.get(reused.id).status == "interrupted" and store.get(reused.id).owner is None
    assert store.get(other.id).status == "queued" and store.get(mine.id).status == "queued"
    with pytest.raises(ValueError, match="stop it before deleting"):
        store.delete(other.id)
    store.update(other.id, owner=Lease(me.pid, (me.start or 0) + 1, me.boot))
    store.delete(other.id)  # its owner is gone, so it can go


def test_old_run_records_with_only_a_pid_still_load(store, tiny_cfg):
    run = create_run(store, tiny_cfg)
    meta = store.folder(run.id) / "meta.json"
    data = json.loads(meta.read_text())
    for key in ("owner_start", "owner_boot"):
        del data[key]
    data.update(status="running", owner_pid=2**22 + 4321)
    meta.write_text(json.dumps(data))
    store.reindex()
    assert store.get(run.id).owner == Lease(2**22 + 4321)
    assert store.recover_interrupted() == [run.id]


def test_resume_refuses_a_run_another_live_process_has_queued(store, tiny_cfg, capsys):
    run = create_run(store, tiny_cfg)
    store.update(run.id, status="queued", owner=Lease.of(os.getppid()))
    before = (store.folder(run.id) / "meta.json").read_bytes()
    assert main(["resume", run.id]) == 2
    assert f"is queued in another process (pid {os.getppid()})" in capsys.readouterr().err
    with pytest.raises(DigitLabError, match="in another process"):
        JobManager(store).run(run.id)
    with pytest.raises(DigitLabError, match="in another process"):
        execute_run(store, run.id)
    assert (store.folder(run.id) / "meta.json").read_bytes() == before


def test_every_queueing_takes_the_lease_and_every_ending_releases_it(store, tiny_cfg):
    jobs = JobManager(store)
    job = jobs.submit(tiny_cfg.replace(epochs=1))
    assert jobs.wait(job.id).status == "completed" and store.get(job.id).owner is None
    run = create_run(store, tiny_cfg.replace(epochs=1))
    store.update(run.id, status="interrupted", owner=None)
    resumed = jobs.resume(run.id)
    assert jobs.wait(resumed.id).status == "completed" and store.get(run.id).owner is None


# -- crash-safe checkpoints -----------------------------------------------------------------------------
class _Crash(Exception):
    pass


def _straight_weights(store, cfg):
    record = execute_run(store, create_run(store, cfg).id)
    return load_tensors(store.weights_path(record.id))[0], record


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_crash_between_any_two_checkpoint_writes_leaves_a_run_that_resumes_bit_for_bit(store, tiny_cfg, monkeypatch):
    from core import storage

    cfg = tiny_cfg.replace(epochs=3)
    straight, _ = _straight_weights(store, cfg)
    real_write, real_unlink, real_save = storage.atomic_write_bytes, Path.unlink, experiment.save_state
    armed, calls, crashing = [False], [], [True]

    def guarded(real):
        def write(*args, **kwargs):
            if armed[0]:
                calls.append(1)
                if len(calls) > crash_after:
                    raise _Crash("power lost")
            return real(*args, **kwargs)
        return write

    def save_state(folder, state, model_name):  # writes of the last epoch's checkpoint, with two before it
        armed[0], calls[:] = state.epoch == 3 and crashing[0], []
        try:
            real_save(folder, state, model_name)
        finally:
            armed[0] = False

    monkeypatch.setattr(storage, "atomic_write_bytes", guarded(real_write))
    monkeypatch.setattr(Path, "unlink", guarded(real_unlink))
    monkeypatch.setattr(experiment, "save_state", save_state)
    resumed_from, crash_after, writes = set(), 0, None
    while writes is None or crash_after <= writes:
        run = create_run(store, cfg)
        record = execute_run(store, run.id)
        if record.status == "completed":  # no crash: every write of the checkpoint was counted
            writes = len(calls)
            crash_after += 1
            continue
        assert record.status == "failed" and "power lost" in record.message and record.status in RESUMABLE
        events, crashing[0] = [], False
        done = execute_run(store, run.id, resume=True, on_event=events.append)
        crashing[0] = True
        assert done.status == "completed" and "damaged" not in done.message
        resumed_from.add(next(e["epoch"] for e in events if e["type"] == "started"))
        assert _same(load_tensors(store.weights_path(run.id))[0], straight), crash_after
        assert [r["epoch"] for r in store.read_metrics(run.id)] == [1, 2, 3]
        crash_after += 1
    assert writes >= 3 and resumed_from == {2, 3}  # the previous checkpoint, or the new one once it is committed


def _stopped_in_epoch_3(store, cfg):
    run = create_run(store, cfg)
    epochs, checks = [], []

    def should_stop():
        if len(epochs) >= 2:
            checks.append(1)
        return len(checks) > 2

    stopped = execute_run(store, run.id, should_stop=should_stop,
                          on_event=lambda e: e["type"] == "epoch" and epochs.append(e["epoch"]))
    assert stopped.status == "cancelled"
    return run.id


def test_checkpoints_keep_the_latest_two_epochs(store, tiny_cfg):
    record = execute_run(store, create_run(store, tiny_cfg.replace(epochs=4)).id)
    folder = store.folder(record.id)
    assert sorted(p.name for p in folder.glob("*checkpoint*")) == [
        "checkpoint-3.safetensors", "checkpoint-4.safetensors", "checkpoint.json"]
    pointer = json.loads((folder / "checkpoint.json").read_text())
    assert (pointer["file"], pointer["epoch"]) == ("checkpoint-4.safetensors", 4)
    assert (pointer["previous"]["file"], pointer["previous"]["epoch"]) == ("checkpoint-3.safetensors", 3)


def test_a_checkpoint_from_a_gpu_resumes_with_the_update_kernel_of_the_device_it_resumes_on(store, tiny_cfg):
    # A GPU trains with the fused Adam, and its checkpoint names that in its optimiser settings. Resumed on a CPU,
    # the run takes the CPU's own Adam (the default), whatever the saver used.
    from core.training.checkpoint import load_state

    cfg = tiny_cfg.replace(epochs=2)
    record = execute_run(store, create_run(store, cfg).id)
    folder = store.folder(record.id)
    pointer = json.loads((folder / "checkpoint.json").read_text())
    assert [g["fused"] for g in pointer["optimizer_param_groups"]] == [None]
    for group in pointer["optimizer_param_groups"]:
        group["fused"] = True
    (folder / "checkpoint.json").write_text(json.dumps(pointer))
    state, note = load_state(folder, cfg, torch.device("cpu"))
    assert note == "" and [g["fused"] for g in state.optimizer.param_groups] == [None]


@pytest.mark.parametrize("harm", ["damaged", "missing"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_epoch_with_a_message(store, tiny_cfg, harm):
    cfg = tiny_cfg.replace(epochs=3)
    straight, _ = _straight_weights(store, cfg)
    run_id = _stopped_in_epoch_3(store, cfg)
    latest = store.folder(run_id) / "checkpoint-2.safetensors"
    if harm == "damaged":
        data = bytearray(latest.read_bytes())
        data[-1] ^= 0xFF
        latest.write_bytes(bytes(data))
    else:
        latest.unlink()
    events = []
    record = execute_run(store, run_id, resume=True, on_event=events.append)
    note = "The checkpoint of epoch 2 was missing or damaged; resumed from epoch 1."
    assert record.status == "completed" and note in record.message
    assert {"type": "warning", "run_id": run_id, "message": note} in events
    assert next(e["epoch"] for e in events if e["type"] == "started") == 1
    assert [r["epoch"] for r in store.read_metrics(run_id)] == [1, 2, 3]
    assert _same(load_tensors(store.weights_path(run_id))[0], straight)


def test_a_run_checkpointed_in_the_old_single_file_layout_still_resumes(store, tiny_cfg):
    cfg = tiny_cfg.replace(epochs=3)
    straight, _ = _straight_weights(store, cfg)
    run_id = _stopped_in_epoch_3(store, cfg)
    folder = store.folder(run_id)
    (folder / "checkpoint-2.safetensors").rename(folder / "checkpoint.safetensors")
    (folder / "checkpoint-1.safetensors").unlink()
    pointer = json.loads((folder / "checkpoint.json").read_text())
    del pointer["file"], pointer["previous"]
    (folder / "checkpoint.json").write_text(json.dumps(pointer))
    record = execute_run(store, run_id, resume=True)
    assert record.status == "completed" and record.message == ""
    assert _same(load_tensors(store.weights_path(run_id))[0], straight)


def test_a_torn_last_metrics_line_is_skipped(store, tiny_cfg):
    run = create_run(store, tiny_cfg)
    store.append_metrics(run.id, {"epoch": 1, "val_loss": 0.5})
    with open(store.folder(run.id) / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "val_lo')  # power lost mid-append
    assert store.read_metrics(run.id) == [{"epoch": 1, "val_loss": 0.5}]


# -- one trainer per run ---------------------------------------------------------------------------------
def test_two_resumes_at_once_train_the_run_once(store, tiny_cfg):
    run_id = _stopped_in_epoch_3(store, tiny_cfg.replace(epochs=3))
    started, release, events, results = threading.Event(), threading.Event(), [], []

    def first_on_event(event):
        events.append(event)
        if event["type"] == "started":
            started.set()
            release.wait(60)  # hold the run (and its lock) while the second resume tries

    first = threading.Thread(target=lambda: results.append(
        execute_run(store, run_id, resume=True, on_event=first_on_event)))
    first.start()
    assert started.wait(60)
    meta = store.folder(run_id) / "meta.json"
    before = meta.read_bytes()
    with pytest.raises(DigitLabError, match=rf"Run {run_id} is being trained by another process \(pid {os.getpid()}\)"):
        execute_run(store, run_id, resume=True)
    assert meta.read_bytes() == before  # the loser changed nothing
    release.set()
    first.join(60)
    assert results[0].status == "completed"
    assert [e["type"] for e in events].count("started") == 1
    assert [r["epoch"] for r in store.read_metrics(run_id)] == [1, 2, 3]


def test_a_run_locked_by_another_process_is_refused_naming_it(store, tiny_cfg):
    run = create_run(store, tiny_cfg)
    store.update(run.id, status="interrupted", owner=None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom core.ownership import train_lock\n"
                               f"with train_lock({str(store.folder(run.id))!r}, 'x'):\n"
                               "    print('locked', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (store.folder(run.id) / "meta.json").read_bytes()
        with pytest.raises(DigitLabError, match=rf"being trained by another process \(pid {holder.pid}\)"):
            execute_run(store, run.id, resume=True)
        assert (store.folder(run.id) / "meta.json").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with train_lock(store.folder(run.id), run.id):  # a dead holder's lock is gone with it
        pass

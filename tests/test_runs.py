"""The run store and weight files: atomic writes, index, recovery, and refusing foreign files."""
from __future__ import annotations

import dataclasses
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from core import storage
from core.errors import CheckpointError, RunNotFoundError
from core.runs import stored_steps, thinned
from core.training import experiment
from core.training.experiment import create_run, execute_run
from core.models.zoo import build_model
from core.inference.predict import Predictor
from core.storage import atomic_write_bytes
from core.inference.weights import load_model, save_model


def test_atomic_write_survives_an_exception_mid_write(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    atomic_write_bytes(target, b"old contents")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]  # no temp file left behind


def test_run_lifecycle_in_the_store(store, tiny_cfg):
    record = execute_run(store, create_run(store, tiny_cfg, name="first").id)
    assert record.status == "completed" and 0 <= record.metrics["test_accuracy"] <= 1
    assert record.weights_sha256 and record.params == 93_322 and record.timings["train_seconds"] > 0
    assert record.versions["torch"] == torch.__version__
    assert [r["epoch"] for r in store.read_metrics(record.id)] == [1, 2]
    assert [r.id for r in store.list()] == [record.id]
    assert store.list(status="failed") == [] and store.list(model="seed-cnn")[0].name == "first"
    assert store.rename(record.id, "renamed").name == "renamed"
    assert store.resolve("renamed").id == record.id and store.resolve(record.id[:-1]).id == record.id
    model = load_model(store.weights_path(record.id), record.weights_sha256)
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    store.delete(record.id)
    assert store.list() == []
    with pytest.raises(RunNotFoundError):
        store.get(record.id)


def test_each_epochs_metrics_row_keeps_its_steps_for_the_loss_curve(store, tiny_cfg, monkeypatch):
    monkeypatch.setattr(experiment, "STEP_POINTS", 3)  # 8 steps an epoch, kept as 3 or 4 of them
    events = []
    record = execute_run(store, create_run(store, tiny_cfg).id, on_event=events.append)
    steps = [[e["step"], e["loss"], e["lr"]] for e in events if e["type"] == "step"]
    rows = store.read_metrics(record.id)
    assert [row["steps"] for row in rows] == [[steps[0], steps[3], steps[6], steps[7]],  # evenly, with the last
                                             [steps[8], steps[11], steps[14], steps[15]]]
    assert [row["step"] for row in rows] == [8, 16]
    monkeypatch.setattr(experiment, "RUN_STEP_POINTS", 4)  # a run's rows keep about this many together: 2 an epoch
    record = execute_run(store, create_run(store, tiny_cfg).id)
    assert [[p[0] for p in row["steps"]] for row in store.read_metrics(record.id)] == [[1, 5, 8], [9, 13, 16]]


def test_a_run_ended_mid_epoch_keeps_that_epochs_steps_until_a_resume_re_runs_it(store, tiny_cfg):
    events = []
    calls = iter(range(100))  # stopped before its 12th step: 8 steps of epoch 1, 3 of epoch 2
    record = execute_run(store, create_run(store, tiny_cfg).id, on_event=events.append,
                         should_stop=lambda: next(calls) >= 11)
    steps = [[e["step"], e["loss"], e["lr"]] for e in events if e["type"] == "step"]
    assert record.status == "cancelled" and [e[0] for e in steps] == list(range(1, 12))
    assert record.unfinished_steps == steps[8:]
    assert stored_steps(store.read_metrics(record.id), record.unfinished_steps) == [tuple(p) for p in steps]
    resumed = execute_run(store, record.id, resume=True)  # epoch 2 again, from its start
    assert resumed.status == "completed" and resumed.unfinished_steps == []
    assert [p[0] for p in stored_steps(store.read_metrics(record.id))] == list(range(1, 17))


def test_a_run_diverged_in_its_first_epoch_keeps_the_steps_that_show_why(store, tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, optimizer="sgd", lr=10.0)
    record = execute_run(store, create_run(store, cfg).id)
    assert record.status == "diverged" and store.read_metrics(record.id) == []
    assert record.unfinished_steps and record.unfinished_steps[0][0] == 1 and record.unfinished_steps[0][2] == 10.0


def test_thinning_keeps_every_point_up_to_the_limit_then_even_ones_and_the_last():
    assert thinned([1, 2, 3], 3) == [1, 2, 3]
    assert thinned(list(range(10)), 5) == [0, 2, 4, 6, 8, 9]
    assert thinned(list(range(9)), 3) == [0, 3, 6, 8]
    assert thinned([], 3) == []


def test_index_is_rebuilt_from_run_folders(store, tiny_cfg):
    ids = {create_run(store, tiny_cfg).id for _ in range(3)}
    store.index_path.unlink()
    fresh = type(store)(store.root)
    assert fresh.list() == []
    assert fresh.reindex() == 3 and {r.id for r in fresh.list()} == ids


def test_runs_left_running_by_a_dead_process_become_interrupted(store, tiny_cfg):
    dead = create_run(store, tiny_cfg)
    store.update(dead.id, status="running", owner_pid=2**22 + 12345)  # no such process
    live = create_run(store, tiny_cfg)
    store.update(live.id, status="running", owner_pid=os.getpid())
    assert store.recover_interrupted(live_run_ids={live.id}) == [dead.id]
    assert store.get(dead.id).status == "interrupted" and store.get(live.id).status == "running"


def test_interrupted_run_without_a_checkpoint_resumes_from_scratch(store, tiny_cfg):
    run = create_run(store, tiny_cfg)
    store.update(run.id, status="interrupted")
    assert execute_run(store, run.id, resume=True).status == "completed"


def test_failed_run_records_the_reason(store, tiny_cfg, monkeypatch):
    from core.training import experiment

    def broken_loader(name, device):
        raise MemoryError("out of memory")

    monkeypatch.setattr(experiment, "load_splits", broken_loader)
    events = []
    record = execute_run(store, create_run(store, tiny_cfg).id, on_event=events.append)
    assert record.status == "failed" and "out of memory" in record.message
    assert [e["type"] for e in events] == ["failed", "finished"] and "out of memory" in events[0]["message"]


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "w.safetensors"
    sha = save_model(path, build_model("seed-mlp"), "seed-mlp")
    return path, sha


def test_tampered_weights_are_refused(weights):
    path, sha = weights
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(path, sha)


def test_the_same_weights_saved_again_make_the_same_file(tmp_path):
    # safetensors writes its metadata in hash order: the same tensors made a new file and sha256 at each save
    torch.manual_seed(0)
    model = build_model("seed-mlp")
    shas = {save_model(tmp_path / f"w{i}.safetensors", model, "seed-mlp", {"run_id": "r", "dataset": "mnist"})
            for i in range(6)}
    assert len(shas) == 1
    assert torch.equal(load_model(tmp_path / "w0.safetensors").state_dict()["net.1.weight"],
                       model.state_dict()["net.1.weight"])
    assert storage.read_header(tmp_path / "w0.safetensors")["run_id"] == "r"


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/digit-lab-pwned", "w"))


def test_pickle_file_is_refused_and_never_unpickled(tmp_path):
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps({"net.1.weight": _Exploit()}))
    if os.path.exists("/tmp/digit-lab-pwned"):
        os.remove("/tmp/digit-lab-pwned")
    with pytest.raises(CheckpointError, match="not a Digit Lab weights file"):
        load_model(evil)
    assert not os.path.exists("/tmp/digit-lab-pwned")
    torch_file = tmp_path / "model.pt"
    torch.save(build_model("seed-mlp").state_dict(), torch_file)
    with pytest.raises(CheckpointError):
        load_model(torch_file)


def test_foreign_safetensors_and_wrong_shapes_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a Digit Lab one"):
        load_model(foreign)
    wrong = tmp_path / "wrong.safetensors"
    save_model(wrong, build_model("seed-mlp"), "seed-cnn")  # MLP weights claiming to be the CNN
    with pytest.raises(CheckpointError, match="does not fit model 'seed-cnn'"):
        load_model(wrong)
    unknown = tmp_path / "unknown.safetensors"
    save_model(unknown, build_model("seed-mlp"), "resnet-9000")
    with pytest.raises(CheckpointError, match="not in the zoo"):
        load_model(unknown)


def test_non_finite_weights_are_refused(tmp_path):
    model = build_model("seed-mlp")
    with torch.no_grad():
        model.net[1].weight[0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_model(path, model, "seed-mlp")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(path)


def test_empty_and_missing_files_are_refused(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_model(empty)
    with pytest.raises(CheckpointError, match="No weights file"):
        load_model(tmp_path / "absent.safetensors")


def test_a_weights_file_without_a_sidecar_is_still_checked(weights):
    path, _ = weights
    assert load_model(path) is not None  # no sidecar: the digest in the file's own header is checked
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one weight's last byte, inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        load_model(path)
    with pytest.raises(CheckpointError, match="digest"):
        Predictor.load(path)


def test_a_tagged_file_with_no_checksum_at_all_is_refused(tmp_path):
    bare = tmp_path / "bare.safetensors"
    save_file(dict(build_model("seed-mlp").state_dict()), str(bare), metadata={"format": "digit-lab", "model": "seed-mlp"})
    with pytest.raises(CheckpointError, match="integrity cannot be checked"):
        load_model(bare)

"""Training steps replayed from a CUDA graph (core.training.graphs): which runs take them, that a graphed run learns
what an ordinary one does, catches divergence, and checkpoints and resumes. The CUDA tests run where a GPU is
(a session lent one runs this file there); the rest run everywhere."""
from __future__ import annotations

import json

import pytest
import torch

from core.data.datasets import load_splits
from core.training import train as train_module
from core.training.checkpoint import POINTER, load_state, save_state
from core.training.config import TrainConfig
from core.training.graphs import WARMUP_STEPS, GraphedStep, graphable, set_lr
from core.training.train import new_state, train

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_only_plain_adam_runs_on_a_cuda_device_are_graphed(monkeypatch):
    cfg = TrainConfig.from_preset("fast")
    plain = dict(private=False, attacked=False, distributed=False)
    assert graphable(cfg, CUDA, **plain)
    assert graphable(cfg.replace(optimizer="adamw"), CUDA, **plain)
    assert not graphable(cfg, torch.device("cpu"), **plain)  # a CPU launches its own work: nothing to save
    assert not graphable(cfg.replace(optimizer="sgd", beta1=0.9, beta2=0.999), CUDA, **plain)
    for other in ("private", "attacked", "distributed"):
        assert not graphable(cfg, CUDA, **{**plain, other: True})
    monkeypatch.setenv("DIGIT_LAB_CUDA_GRAPHS", "0")  # the switch that turns them off
    assert not graphable(cfg, CUDA, **plain)


def test_a_runs_learning_rate_is_set_as_a_number_or_in_its_device_tensor():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, foreach=False)
    set_lr(optimizer, 0.05)
    assert optimizer.param_groups[0]["lr"] == 0.05
    tensor = torch.tensor(0.1)
    optimizer.param_groups[0]["lr"] = tensor  # as a graphed run holds it: the replayed step reads this memory
    set_lr(optimizer, 0.02)
    assert optimizer.param_groups[0]["lr"] is tensor and tensor.item() == pytest.approx(0.02)


def test_a_checkpoint_of_a_run_whose_learning_rate_is_a_tensor_is_written_and_resumed(digits, tmp_path):
    cfg = TrainConfig(model="seed-cnn", dataset="digits", optimizer="adam", lr=3e-3, epochs=2, batch_size=32,
                      limit_batches=4, seed=3, device="cpu")
    state = new_state(cfg, digits, torch.device("cpu"))
    state.model(torch.rand(2, 1, 28, 28)).sum().backward()
    state.optimizer.step()
    state.optimizer.param_groups[0]["lr"] = torch.tensor(2e-3)
    state.epoch, state.step = 1, 4
    save_state(tmp_path, state, cfg.model)
    groups = json.loads((tmp_path / POINTER).read_text())["optimizer_param_groups"]
    assert groups[0]["lr"] == pytest.approx(2e-3)  # a plain number in the JSON, not a tensor
    resumed, _ = load_state(tmp_path, cfg, torch.device("cpu"))
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    for param, slots in resumed.optimizer.state.items():  # a GPU's fused Adam needs its moments in their weight's
        for name in ("exp_avg", "exp_avg_sq"):  # layout (channels-last convolutions), saved contiguous or not
            assert slots[name].stride() == param.stride() and torch.equal(slots[name], state.optimizer.state[
                dict(zip(resumed.model.parameters(), state.model.parameters()))[param]][name])
    assert train(cfg, digits, resume=resumed).status == "completed"


def test_a_step_that_cannot_be_recorded_is_taken_the_ordinary_way_and_so_is_every_later_one(monkeypatch):
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, foreach=False)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach(), torch.tensor(0.0)])

    graphed = GraphedStep.__new__(GraphedStep)  # as built for a GPU, past its warm-up (this machine has none)
    graphed.step, graphed.optimizer, graphed.batch_size = step, optimizer, 2
    graphed.graph, graphed.warmed, graphed.replays, graphed.failure = None, WARMUP_STEPS, 0, ""
    optimizer.param_groups[0]["lr"] = torch.tensor(0.1)

    def refuse(x, y):
        for group in optimizer.param_groups:  # as torch.cuda.graph leaves it: nothing recorded, nothing run
            group["capturable"] = False
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(graphed, "_capture", refuse)
    before = model.weight.detach().clone()
    x, y = torch.rand(2, 4), torch.tensor([0, 2])
    assert graphed.fits(x)
    figures = graphed(x, y, 0.05)
    assert figures[0].item() > 0 and not torch.equal(model.weight, before)  # the step was taken all the same
    assert graphed.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert not graphed.fits(x) and graphed.replays == 0  # from here on the loop takes ordinary steps
    assert optimizer.param_groups[0]["lr"].item() == pytest.approx(0.05)
    graphed.static, graphed.grads = (), []
    graphed.release()
    assert all(p.grad is None for p in model.parameters())  # nothing of the run's gradients is held after it


@pytest.fixture(scope="module")
def digits_on_gpu():
    return load_splits("digits", CUDA)


def run_on_gpu(cfg: TrainConfig, splits, graphs: bool, monkeypatch, **kwargs):
    monkeypatch.setenv("DIGIT_LAB_CUDA_GRAPHS", "1" if graphs else "0")
    events: list[dict] = []
    outcome = train(cfg, splits, device=CUDA, on_event=events.append, **kwargs)
    assert events[0]["cuda_graph"] is graphs
    return outcome, events


@needs_cuda
@pytest.mark.parametrize("preset,precision", [("fast", "fp32"), ("fast", "bf16"), ("best", "bf16")])
def test_a_graphed_run_is_the_ordinary_run_bit_for_bit(digits_on_gpu, monkeypatch, preset, precision):
    # 1,294 training images at 64: 20 full batches and a ragged one of 14 per epoch, so every kind of step is taken:
    # the warm-up's, the recorded one's replays, and the ragged batch's ordinary step between two epochs' replays.
    # cuDNN's own choice of kernels may add in any order; with its deterministic ones, two runs are the same run.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    # `best` is the ResNet: BatchNorm's running figures and dropout's random numbers inside the graph, augmentation
    # outside it (its generator is the epoch's own).
    cfg = TrainConfig.from_preset(preset).replace(dataset="digits", batch_size=64, epochs=3, train_on_val=False,
                                                  device="cuda", precision=precision)
    graphed, events = run_on_gpu(cfg, digits_on_gpu, True, monkeypatch)
    plain, plain_events = run_on_gpu(cfg, digits_on_gpu, False, monkeypatch)
    assert graphed.status == plain.status == "completed" and graphed.state.step == plain.state.step == 63
    steps = [(e["step"], e["lr"], e["loss"]) for e in events if e["type"] == "step"]
    assert steps == [(e["step"], e["lr"], e["loss"]) for e in plain_events if e["type"] == "step"] and len(steps) == 63
    weights, reference = graphed.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    assert [r["val_accuracy"] for r in graphed.state.history] == [r["val_accuracy"] for r in plain.state.history]
    assert graphed.state.history[-1]["val_accuracy"] > 0.5  # and it learned (chance is 0.1)


@needs_cuda
def test_a_graphed_run_that_blows_up_stops_with_the_sentence_naming_its_step(digits_on_gpu, monkeypatch):
    cfg = TrainConfig.from_preset("fast").replace(dataset="digits", batch_size=32, epochs=3, lr=10.0,
                                                  schedule="constant", train_on_val=False, device="cuda")
    outcome, _ = run_on_gpu(cfg, digits_on_gpu, True, monkeypatch)
    assert outcome.status == "diverged" and "learning rate 10" in outcome.message
    assert outcome.state.step > WARMUP_STEPS  # it got past the warm-up: the replayed steps are judged too


@needs_cuda
@pytest.mark.parametrize("graphs", [True, False])
def test_a_gpu_run_checkpoints_and_resumes_graphed_or_not(digits_on_gpu, monkeypatch, tmp_path, graphs):
    cfg = TrainConfig.from_preset("fast").replace(dataset="digits", batch_size=64, epochs=2, train_on_val=False,
                                                  device="cuda")
    first, _ = run_on_gpu(cfg, digits_on_gpu, graphs, monkeypatch,
                          save_state=lambda state: save_state(tmp_path, state, cfg.model))
    assert first.status == "completed"
    resumed, _ = load_state(tmp_path, cfg.replace(epochs=3), CUDA)
    assert isinstance(resumed.optimizer.param_groups[0]["lr"], float)
    more, _ = run_on_gpu(cfg.replace(epochs=3), digits_on_gpu, graphs, monkeypatch, resume=resumed)
    assert more.status == "completed" and more.state.epoch == 3 and more.state.step == 63
    assert more.state.history[-1]["val_accuracy"] >= first.state.history[-1]["val_accuracy"] - 0.05


def test_the_training_loop_builds_graphed_steps_only_where_graphable(digits, monkeypatch):
    built, events = [], []
    monkeypatch.setattr(train_module, "GraphedStep", lambda *a, **k: built.append(a))
    cfg = TrainConfig(model="speed-cnn", dataset="digits", optimizer="adam", epochs=1, batch_size=32,
                      limit_batches=2, seed=3, device="cpu")
    assert train(cfg, digits, on_event=events.append).status == "completed"
    assert built == [] and events[0]["cuda_graph"] is False  # on the CPU: ordinary steps, as always

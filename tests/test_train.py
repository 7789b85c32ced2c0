"""The training loop: stop flag, divergence, determinism, resume, schedules, early stopping."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

from core.training import train as train_module
from core.training.config import TrainConfig
from core.data.datasets import augment_batch
from core.training.experiment import create_run, execute_run
from core.inference.metrics import EvalResult
from core.insight.compare import model_card
from core.storage import load_tensors
from core.training.readback import READ_BACK_EVERY
from core.training.schedule import lr_at
from core.training.train import train


def test_training_on_digits_learns(digits, tiny_cfg):
    events = []
    outcome = train(tiny_cfg.replace(epochs=3, limit_batches=None, lr=3e-3), digits, on_event=events.append)
    assert outcome.status == "completed"
    assert outcome.state.history[-1]["val_accuracy"] > 0.8
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds.count("epoch") == 3 and "step" in kinds


def test_stop_flag_is_honoured_within_one_batch(digits, tiny_cfg):
    checks = []

    def should_stop():
        checks.append(1)
        return len(checks) > 5

    outcome = train(tiny_cfg, digits, should_stop=should_stop)
    assert outcome.status == "cancelled"
    assert outcome.state.step == 5  # five batches ran, the sixth check stopped it


def test_huge_learning_rate_is_reported_as_diverged(digits, tiny_cfg):
    outcome = train(tiny_cfg.replace(optimizer="sgd", lr=10.0), digits)
    assert outcome.status == "diverged"
    assert "step" in outcome.message and "learning rate 10" in outcome.message


def test_a_finite_but_blown_up_loss_is_stopped_as_diverged_within_the_first_epoch(digits, tiny_cfg):
    # Adam at lr 10 never produces NaN here: the loss swings around huge finite values and the run used to
    # "complete" at chance. It must stop within its first epoch with a sentence.
    outcome = train(tiny_cfg.replace(optimizer="adam", lr=10.0, epochs=3, limit_batches=None, batch_size=32), digits)
    assert outcome.status == "diverged"
    assert outcome.state.epoch == 0 and outcome.state.step <= 45  # 45 steps make one epoch here
    assert "guessing at random" in outcome.message and "learning rate 10" in outcome.message
    assert train(tiny_cfg, digits).status == "completed"  # an ordinary run is never judged blown up


def test_figures_are_read_every_step_on_a_cpu_and_in_groups_on_a_gpu():
    assert train_module.read_back_every(torch.device("cpu")) == 1  # caught before its update, as always
    assert train_module.read_back_every(torch.device("cuda", 0)) == READ_BACK_EVERY == 32
    assert train_module.read_back_every(torch.device("mps")) == 32


def _read_back_every(monkeypatch, steps: int) -> None:
    monkeypatch.setattr(train_module, "read_back_every", lambda device: steps)


def test_figures_read_back_in_groups_train_exactly_as_every_step(digits, tiny_cfg, monkeypatch):
    # A GPU reads its loss and accuracy back every READ_BACK_EVERY steps; forced here on the CPU. The weights, the
    # step events and the epoch rows must be those of reading every step, with one read per group.
    cfg = tiny_cfg.replace(epochs=2, limit_batches=None, batch_size=64, augment=True)
    every_step, grouped, reads = [], [], []
    one = train(cfg, digits, on_event=every_step.append)
    real = train_module.step_figures
    monkeypatch.setattr(train_module, "step_figures", lambda steps, *a: reads.append(len(steps)) or real(steps, *a))
    _read_back_every(monkeypatch, 4)
    four = train(cfg, digits, on_event=grouped.append)
    a, b = one.model.state_dict(), four.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    timeless = lambda rows: [{k: v for k, v in r.items() if k not in ("images_per_second", "seconds")} for r in rows]
    assert timeless(grouped) == timeless(every_step)  # the same steps, losses, rates and epoch rows, in order
    assert timeless(four.state.history) == timeless(one.state.history) and four.state.images == one.state.images
    per_epoch = one.state.step // 2
    assert per_epoch == 21 and reads == [4, 4, 4, 4, 4, 1] * 2  # groups of four, a short one closing each epoch


def test_the_step_loop_reads_nothing_back_between_groups(digits, tiny_cfg, monkeypatch):
    # Every read of a tensor's value to the host (a GPU sync) by the project's code from the first step to the last
    # goes through step_figures; the epoch's end (validation, its preview) may read what it likes. (On a CPU torch's
    # Adam reads its step count, a CPU tensor; on a GPU the fused Adam does not.)
    log, ours = [], str(Path(train_module.__file__).parents[1])
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(ours):
                log.append(caller.co_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    _read_back_every(monkeypatch, 5)
    outcome = train(tiny_cfg.replace(epochs=1, limit_batches=None, batch_size=64, augment=True), digits,
                    on_event=lambda e: log.append(e["type"]))
    assert outcome.status == "completed" and outcome.state.step == 21
    last_step = len(log) - 1 - log[::-1].index("step")
    in_loop = [c for c in log[log.index("started") + 1:last_step] if c != "step"]
    assert in_loop == ["step_figures"] * 5  # 21 steps read back in groups of five: five reads in all


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # a NaN loss; a finite loss far worse than guessing
def test_divergence_read_back_in_groups_names_the_same_step(digits, tiny_cfg, monkeypatch, optimizer):
    cfg = tiny_cfg.replace(optimizer=optimizer, lr=10.0, epochs=3, limit_batches=None, batch_size=32)
    one_events, grouped_events = [], []
    one = train(cfg, digits, on_event=one_events.append)
    assert one.status == "diverged"
    bad = one.state.step + 1  # read every step, the bad step is judged before its update, which never lands
    assert all(torch.isfinite(v).all() for v in one.model.state_dict().values())
    _read_back_every(monkeypatch, bad + 3)  # the bad step mid-group: two more steps run before the group is read
    grouped = train(cfg, digits, on_event=grouped_events.append)
    assert grouped.status == "diverged" and grouped.message == one.message  # the same step and sentence
    assert grouped.state.step == bad + 2  # what ran past it on a GPU; never more than a group
    steps = lambda events: [e["step"] for e in events if e["type"] == "step"]
    assert steps(grouped_events) == steps(one_events) == list(range(1, bad))  # each step before it, reported once
    assert (one.state.images, grouped.state.images) == (32 * one.state.step, 32 * grouped.state.step)


def test_a_stop_in_the_middle_of_a_group_reports_every_step_taken(digits, tiny_cfg, monkeypatch):
    cfg = tiny_cfg.replace(limit_batches=None, batch_size=32, epochs=1)

    def run() -> tuple:
        events, checks = [], []
        outcome = train(cfg, digits, on_event=events.append, should_stop=lambda: checks.append(1) or len(checks) > 10)
        return outcome, [{k: v for k, v in e.items() if k != "images_per_second"} for e in events if e["type"] == "step"]

    one, one_steps = run()
    _read_back_every(monkeypatch, 4)  # read after steps 4 and 8; steps 9 and 10 are pending when the stop comes
    four, four_steps = run()
    assert one.status == four.status == "cancelled" and one.state.step == four.state.step == 10
    assert four_steps == one_steps and [e["step"] for e in four_steps] == list(range(1, 11))
    assert four.state.images == one.state.images == 10 * 32


def test_same_seed_gives_identical_weights_on_cpu(digits, tiny_cfg):
    cfg = tiny_cfg.replace(augment=True, dropout=0.2)
    a = train(cfg, digits).model.state_dict()
    b = train(cfg, digits).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_matches_uninterrupted_run(store, tiny_cfg):
    cfg = tiny_cfg.replace(epochs=3, augment=True, dropout=0.3, optimizer="sgd", momentum=0.9, lr=0.02,
                           schedule="onecycle")
    straight = execute_run(store, create_run(store, cfg).id)

    run = create_run(store, cfg)
    epochs_done, checks_after_epoch_1 = [], []

    def on_event(event):
        if event["type"] == "epoch":
            epochs_done.append(event["epoch"])

    def should_stop():  # stop a few batches into the second epoch
        if epochs_done:
            checks_after_epoch_1.append(1)
        return len(checks_after_epoch_1) > 3

    stopped = execute_run(store, run.id, on_event=on_event, should_stop=should_stop)
    assert stopped.status == "cancelled"
    resumed = execute_run(store, run.id, resume=True)
    assert resumed.status == "completed"

    a, _ = load_tensors(store.weights_path(straight.id))
    b, _ = load_tensors(store.weights_path(run.id))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in store.read_metrics(run.id)] == [1, 2, 3]
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]


def test_max_steps_caps_the_run(digits, tiny_cfg):
    outcome = train(tiny_cfg.replace(max_steps=3, epochs=5), digits)
    assert outcome.status == "completed" and outcome.state.step == 3


def test_train_size_uses_only_that_many_images(digits, tiny_cfg):
    events = []
    train(tiny_cfg.replace(train_size=100, limit_batches=None, batch_size=50, epochs=1), digits,
          on_event=events.append)
    assert events[0]["train_size"] == 100 and events[0]["total_steps"] == 2


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch(digits, tiny_cfg, monkeypatch):
    losses = iter([1.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    snapshots = []

    def fake_evaluate(model, x, y, batch_size=1000):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return EvalResult(next(losses), 0.5, len(y), torch.empty(0, 10), y)

    monkeypatch.setattr(train_module, "evaluate", fake_evaluate)
    outcome = train(tiny_cfg.replace(epochs=6, patience=2), digits)
    assert outcome.state.epoch == 4  # best at epoch 2, no improvement in epochs 3 and 4
    best = snapshots[1]
    assert all(torch.equal(outcome.model.state_dict()[k], best[k]) for k in best)


def test_l1_penalty_shrinks_weights(digits, tiny_cfg):
    def l1_norm(cfg):
        model = train(cfg, digits).model
        return sum(p.abs().sum().item() for n, p in model.named_parameters() if "weight" in n)

    assert l1_norm(tiny_cfg.replace(l1=1e-3)) < l1_norm(tiny_cfg)


def test_bf16_autocast_trains(digits, tiny_cfg):
    outcome = train(tiny_cfg.replace(precision="bf16", max_steps=4), digits)
    assert outcome.status == "completed" and math.isfinite(outcome.state.history[-1]["train_loss"])


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_is_bf16_only_for_the_cnns_on_native_bf16(monkeypatch, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    for model in ("seed-cnn", "speed-cnn", "resnet"):
        assert train_module.resolve_precision(TrainConfig(model=model), cpu) == ("bf16" if amx else "fp32")
    for model in ("seed-mlp", "vit-tiny", "dp-cnn"):  # measured slower in bf16, or not measured
        assert train_module.resolve_precision(TrainConfig(model=model), cpu) == "fp32"
    private = TrainConfig.from_preset("private").replace(model="seed-cnn")
    assert train_module.resolve_precision(private, cpu) == "fp32"  # DP-SGD stays fp32 whatever the hardware
    for explicit in ("fp32", "bf16"):  # an explicit choice is kept
        assert train_module.resolve_precision(TrainConfig(model="vit-tiny", precision=explicit), cpu) == explicit


def test_the_resolved_precision_is_announced_and_recorded(digits, tiny_cfg, store, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    events = []
    record = execute_run(store, create_run(store, tiny_cfg.replace(epochs=1, max_steps=2)).id, on_event=events.append)
    assert events[0]["type"] == "started" and events[0]["precision"] == "bf16"
    assert record.timings["precision"] == "bf16" and record.timings["device"] == "cpu"
    assert " s on cpu in bf16 (" in model_card(record, store.read_metrics(record.id), "w.safetensors")
    private = TrainConfig.from_preset("private", dataset="digits", epochs=1, max_steps=2)
    assert store.get(execute_run(store, create_run(store, private).id).id).timings["precision"] == "fp32"


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_learning_rate_schedules(schedule):
    cfg = TrainConfig(lr=0.1, schedule=schedule, step_every=1, step_gamma=0.5, warmup_fraction=0.2)
    lrs = [lr_at(cfg, s, total_steps=100, per_epoch=10) for s in range(100)]
    assert all(0 < lr <= 0.1 + 1e-12 for lr in lrs)
    if schedule == "constant":
        assert set(lrs) == {0.1}
    elif schedule == "step":
        assert lrs[9] == 0.1 and lrs[10] == 0.05 and lrs[25] == 0.025
    elif schedule == "cosine":
        assert lrs[0] == 0.1 and lrs[50] == pytest.approx(0.05) and lrs[-1] < 1e-3
    else:
        assert lrs[0] == pytest.approx(0.1 / 25) and lrs[20] == pytest.approx(0.1)
        assert max(lrs) == pytest.approx(0.1) and lrs[-1] < 1e-4


def test_augmentation_keeps_shape_and_range_and_is_identity_at_zero_strength():
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    gen = torch.Generator().manual_seed(0)
    same = augment_batch(x, gen, rotate_deg=0, scale=0, translate_px=0, erase_prob=0)
    assert torch.allclose(same, x, atol=1e-5)
    moved = augment_batch(x, gen, rotate_deg=15, scale=0.1, translate_px=2, erase_prob=1.0)
    assert moved.shape == x.shape and moved.min() >= 0 and moved.max() <= 1
    assert not torch.allclose(moved, x, atol=1e-3)
    assert (moved.sum((1, 2, 3)) < x.sum((1, 2, 3))).any()  # erasing removed ink somewhere


def test_fine_tuning_starts_from_a_run_and_oversamples_its_mistakes(store, tiny_cfg):
    from core.training.train import hard_example_weights
    from core.inference.weights import load_model

    parent = execute_run(store, create_run(store, tiny_cfg.replace(max_steps=4)).id)
    cfg = tiny_cfg.replace(init_from=parent.id, focus_errors=5.0, epochs=1, lr=1e-4)
    child = execute_run(store, create_run(store, cfg, parent=parent.id).id)
    assert child.status == "completed" and child.parent == parent.id
    model = load_model(store.weights_path(parent.id))
    from core.data.datasets import load_splits

    splits = load_splits("digits")
    weights = hard_example_weights(model, splits.train_x, splits.train_y, 5.0)
    assert weights.min() >= 1.0 and weights.max() <= 6.0
    wrong = model(splits.train_x[:, None].float() / 255).argmax(1) != splits.train_y
    assert weights[wrong].mean() > weights[~wrong].mean()  # mistakes are drawn more often


def test_fine_tuning_a_different_architecture_is_refused(store, tiny_cfg):
    parent = execute_run(store, create_run(store, tiny_cfg.replace(max_steps=2)).id)
    child = execute_run(store, create_run(store, tiny_cfg.replace(model="seed-mlp", init_from=parent.id)).id)
    assert child.status == "failed" and "fine-tuning it needs model=seed-cnn" in child.message


def test_focus_errors_needs_a_starting_model():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig(focus_errors=2.0)


def test_training_runs_convolutions_channels_last_and_saves_plain_weights(store, tiny_cfg, monkeypatch):
    """The layout is how core trains (faster on oneDNN); the weights file is the same as before."""
    placed = train_module.place(train_module.build_model("seed-cnn"), torch.device("cpu"))
    convs = [m.weight for m in placed.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not any(w.is_contiguous() for w in convs if w.shape[1] > 1)  # one input channel: the layouts coincide
    layouts, real_place = [], train_module.place

    def spy(model, device):
        placed = real_place(model, device)
        layouts.extend(m.weight.is_contiguous(memory_format=torch.channels_last)
                       for m in placed.modules() if isinstance(m, torch.nn.Conv2d))
        return placed

    monkeypatch.setattr(train_module, "place", spy)
    run = execute_run(store, create_run(store, tiny_cfg).id)
    assert run.status == "completed" and layouts and all(layouts)
    weights, _ = load_tensors(store.weights_path(run.id))
    assert all(t.is_contiguous() for t in weights.values())


def test_the_allocator_keeps_freed_memory_on_glibc_unless_told_not_to():
    import os
    import platform
    import subprocess
    import sys

    from tests.conftest import REPO

    code = "from core.training.allocator import keep_freed_memory as k; print(k(), k())"
    tuned = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert tuned.stdout.split() == [str(glibc)] * 2, tuned.stderr
    plain = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "DIGIT_LAB_MALLOC": "default"},
                           capture_output=True, text=True, timeout=120)
    assert plain.stdout.split() == ["False", "False"], plain.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="core affinity is Linux only")
def test_usable_cores_are_the_ones_this_process_may_run_on():
    # Under taskset or a container's cpuset os.cpu_count() names the machine's cores; the server's torch threads
    # and the sidebar's caption go by these instead
    from core.training.devices import usable_cores

    mine = os.sched_getaffinity(0)
    assert usable_cores() == len(mine)
    try:
        os.sched_setaffinity(0, {min(mine)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, mine)


@pytest.mark.parametrize("dataset, drawings, glow", [("digits", False, 0.0), ("mnist", False, 0.0), ("mnist", True, 0.2)])
def test_fine_tuning_the_starter_trains_without_its_glow_and_a_drawing_retrain_reads_with_it(store, tiny_cfg, mnist,
                                                                                            dataset, drawings, glow):
    # The starter reads through a glow set after training (core.models.zoo.Glow), and its weights were trained without
    # one: a run starting from them trains without it; a drawing set's retrain on the starter's own dataset reads
    # through it, as measured; any other run reads as a run from scratch does
    from core.data.drawing_sets import DrawingStore
    from core.inference.predict import Predictor
    from core.inference.weights import load_model
    from core.training import experiment
    from tests.test_drawing_sets import _fill

    assert Predictor.starter().models[0].glow_amount == pytest.approx(0.2)
    if drawings:
        _fill(DrawingStore(store.root), "Class 3B", 20)
    cfg = tiny_cfg.replace(model="resnet", dataset=dataset, init_from="starter", max_steps=2, lr=1e-5,
                           drawings="Class 3B" if drawings else None)
    record = create_run(store, cfg)
    start = experiment._inputs(store, record, TrainConfig.from_dict(record.config), "cpu", resume=False)
    assert not any(k.startswith("glow.") for k in start.init)  # trained from the weights alone
    assert start.glow == pytest.approx(glow)
    child = execute_run(store, record.id)
    assert child.status == "completed", child.message
    assert load_model(store.weights_path(child.id)).glow_amount == pytest.approx(glow)
    assert child.metrics.get("read_glow", 0.0) == pytest.approx(glow)  # recorded where the run's figures are

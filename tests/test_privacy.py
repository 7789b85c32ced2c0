"""Differentially private training: ε reported and accounted as Opacus does, refusals with a sentence."""
from __future__ import annotations

import math

import pytest
import torch

from core.errors import ConfigError, DigitLabError
from core.training.config import TrainConfig
from core.training.privacy import epsilon_for, noise_multiplier_for
from core.training.train import train

DP = dict(model="seed-mlp", dataset="digits", epochs=3, batch_size=64, dp=True, target_epsilon=3.0, delta=1e-5,
          optimizer="sgd", lr=0.5, max_grad_norm=1.0, seed=2)


@pytest.fixture(scope="module")
def dp_run(digits):
    events = []
    outcome = train(TrainConfig(**DP), digits, on_event=events.append)
    return outcome, events


def test_dp_training_reports_a_finite_epsilon_that_grows_with_epochs(dp_run):
    outcome, events = dp_run
    assert outcome.status == "completed"
    eps = [e["epsilon"] for e in events if e["type"] == "epoch"]
    assert len(eps) == 3 and all(math.isfinite(e) and e > 0 for e in eps)
    assert eps[0] < eps[1] < eps[2]
    assert eps[-1] == pytest.approx(3.0, rel=0.02)  # the noise was chosen to spend the target by the last step


def test_dp_epsilon_matches_opacus_for_the_same_settings(dp_run, digits):
    outcome, events = dp_run
    started = events[0]
    steps = outcome.state.step
    q = DP["batch_size"] / len(digits.train_y)
    assert started["sample_rate"] == pytest.approx(q)
    assert started["noise_multiplier"] == noise_multiplier_for(3.0, 1e-5, q, steps)
    assert outcome.state.history[-1]["epsilon"] == pytest.approx(
        epsilon_for(started["noise_multiplier"], q, steps, 1e-5), rel=1e-9)


def test_dp_batches_are_poisson_sampled():
    from core.training.privacy import PrivateSession

    session = PrivateSession(None, None, None, sample_rate=0.05, noise_multiplier=1.0, delta=1e-5)
    gen = torch.Generator().manual_seed(0)
    sizes = [len(session.sample(2_000, gen)) for _ in range(200)]
    assert len(set(sizes)) > 10  # batch sizes vary
    assert sum(sizes) / len(sizes) == pytest.approx(100, rel=0.05)  # q·N on average


def test_dp_leaves_no_hooks_and_its_weights_load_as_the_zoo_model(dp_run, tmp_path):
    from core.inference.weights import load_model, save_model

    model = dp_run[0].model
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    save_model(tmp_path / "w.safetensors", model, "seed-mlp")
    assert type(load_model(tmp_path / "w.safetensors").net) is type(model.net)


@pytest.mark.parametrize("model, words", [("resnet", "BatchNorm"), ("vit-tiny", "MultiheadAttention")])
def test_models_dp_cannot_handle_are_refused_with_a_sentence(model, words):
    with pytest.raises(ConfigError, match=words) as caught:
        TrainConfig(model=model, dp=True)
    assert caught.value.field == "model" and "dp-cnn, seed-cnn or seed-mlp" in str(caught.value)


@pytest.mark.parametrize("change, field", [
    (dict(adversarial="fgsm"), "adversarial"), (dict(init_from="starter"), "init_from"),
    (dict(l1=1e-4), "l1"), (dict(precision="bf16"), "precision"),
])
def test_dp_refuses_what_its_accounting_cannot_cover(change, field):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(model="seed-cnn", dp=True, **change)
    assert caught.value.field == field


def test_dp_run_prints_and_stores_epsilon_and_refuses_to_resume(store, capsys):
    import json

    from core.cli import main
    from core.training.experiment import create_run, execute_run

    cfg = TrainConfig(**{**DP, "epochs": 2})
    assert main(["train", "--dataset", "digits", "--model", "seed-mlp", "--epochs", "2", "--batch-size", "64", "--dp",
                 "--optimizer", "sgd", "--lr", "0.5", "--seed", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = store.get(summary["run_id"])
    assert record.status == "completed" and 0 < record.metrics["epsilon"] <= 3.0 * 1.02
    assert summary["epsilon"] == record.metrics["epsilon"] == store.read_metrics(record.id)[-1]["epsilon"]

    run = create_run(store, cfg)
    checks = []
    stopped = execute_run(store, run.id, should_stop=lambda: len(checks) > 25 or checks.append(1))
    assert stopped.status == "cancelled"
    with pytest.raises(DigitLabError, match="cannot resume"):
        execute_run(store, run.id, resume=True)
    assert store.get(run.id).status == "cancelled"  # refused before anything changed


def test_empty_poisson_batches_still_take_a_private_step(digits, monkeypatch):
    from core.training import privacy

    sizes, sample = [], privacy.PrivateSession.sample
    monkeypatch.setattr(privacy.PrivateSession, "sample",
                        lambda self, n, gen: sizes.append(len(idx := sample(self, n, gen))) or idx)
    cfg = TrainConfig(**{**DP, "train_size": 100, "batch_size": 1, "epochs": 1, "limit_batches": 12})
    outcome = train(cfg, digits)
    assert outcome.status == "completed" and 0 in sizes  # q = 1/100: some batches are empty
    assert outcome.state.step == 12 and math.isfinite(outcome.state.history[-1]["epsilon"])

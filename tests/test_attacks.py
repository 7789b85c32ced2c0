"""Adversarial attacks, corruptions, adversarial training and the `robustness` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.cli import main
from core.data.datasets import to_float
from core.insight.attacks import (CORRUPTIONS, AttackSettings, adversarial_accuracy, corruption_table, fgsm, pgd,
                                  robustness_curve)
from core.training.config import TrainConfig
from core.training.train import train

SMALL = dict(model="seed-mlp", optimizer="adam", lr=2e-3, batch_size=128, epochs=1, train_size=20_000, max_steps=150,
             seed=1)  # a few seconds on the CPU, about 93% on MNIST


@pytest.fixture(scope="module")
def small_model(mnist):
    outcome = train(TrainConfig(**SMALL), mnist)
    assert outcome.status == "completed"
    return outcome.model.eval()


@pytest.fixture(scope="module")
def batch(mnist):
    return to_float(mnist.test_x[:300]), mnist.test_y[:300]


def _loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attacks_raise_the_loss_and_stay_in_the_eps_ball_and_in_0_1(small_model, batch, attack):
    x, y = batch
    adv = fgsm(small_model, x, y, 0.1) if attack == "fgsm" else pgd(small_model, x, y, 0.1, steps=10)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert _loss(small_model, adv, y) > _loss(small_model, x, y) + 0.5


def test_pgd_is_at_least_as_strong_as_fgsm(small_model, batch):
    x, y = batch
    acc_fgsm = _accuracy(small_model, fgsm(small_model, x, y, 0.1), y)
    acc_pgd = _accuracy(small_model, pgd(small_model, x, y, 0.1, steps=20), y)
    assert acc_pgd <= acc_fgsm


def test_pgd_at_eps_0_3_drives_a_trained_model_below_10_percent(small_model, mnist):
    result = adversarial_accuracy(small_model, mnist.test_x[:300], mnist.test_y[:300], AttackSettings("pgd", 0.3, 40))
    assert result.clean_accuracy > 0.85
    assert result.adversarial_accuracy < 0.10


def test_attacks_leave_the_model_as_they_found_it(small_model, batch):
    x, y = batch
    small_model.zero_grad(set_to_none=True)
    small_model.train()
    pgd(small_model, x[:20], y[:20], 0.1, steps=3)
    assert small_model.training  # handed back in its own mode
    small_model.eval()
    assert all(p.grad is None for p in small_model.parameters())  # only the input's gradient was taken
    assert not any(m._forward_hooks or m._backward_hooks for m in small_model.modules())


def test_attacks_are_deterministic_for_a_seed(small_model, mnist):
    settings = AttackSettings("pgd", 0.1, 5)
    a = adversarial_accuracy(small_model, mnist.test_x[:100], mnist.test_y[:100], settings, seed=4)
    b = adversarial_accuracy(small_model, mnist.test_x[:100], mnist.test_y[:100], settings, seed=4)
    assert a == b


def test_robustness_curve_falls_with_eps_and_reports_progress(small_model, mnist):
    calls = []
    curve = robustness_curve(small_model, mnist.test_x[:200], mnist.test_y[:200], [0.0, 0.05, 0.2], attack="pgd",
                             steps=10, batch_size=100, progress=lambda done, total: calls.append((done, total)))
    assert curve.eps == (0.0, 0.05, 0.2) and curve.n == 200
    assert curve.accuracy[0] > curve.accuracy[1] > curve.accuracy[2]
    assert calls[-1] == (600, 600) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bad_attack_settings_are_refused_with_a_sentence():
    from core.errors import DigitLabError

    with pytest.raises(DigitLabError, match="ε must be a number from 0 to 1"):
        AttackSettings("pgd", 2.0)
    with pytest.raises(DigitLabError, match="attack must be one of fgsm, pgd"):
        AttackSettings("cw", 0.1)


def test_corruption_table_is_deterministic_and_hurts_with_severity(small_model, mnist):
    x, y = mnist.test_x[:200], mnist.test_y[:200]
    a = corruption_table(small_model, x, y, severities=(1, 5), seed=3)
    b = corruption_table(small_model, x, y, severities=(1, 5), seed=3)
    assert a == b
    assert {r.corruption for r in a.rows} == set(CORRUPTIONS) and len(a.rows) == 2 * len(CORRUPTIONS)
    assert all(0.0 <= r.accuracy <= 1.0 for r in a.rows)
    for name in ("noise", "rotation", "shift", "scale"):
        assert a.accuracy(name, 5) < a.clean_accuracy
    assert a.accuracy("rotation", 5) < a.accuracy("rotation", 1)


def test_adversarial_training_raises_robust_accuracy(small_model, mnist):
    plain = small_model  # the same training without the attack
    hardened = train(TrainConfig(**SMALL, adversarial="fgsm", adv_eps=0.1), mnist).model
    settings = AttackSettings("pgd", 0.1, 10)
    x, y = mnist.test_x[:300], mnist.test_y[:300]
    robust_plain = adversarial_accuracy(plain, x, y, settings).adversarial_accuracy
    robust_hardened = adversarial_accuracy(hardened, x, y, settings).adversarial_accuracy
    assert robust_hardened > robust_plain + 0.15


def test_an_adversarially_trained_run_records_its_robust_accuracy(store):
    from core.training.experiment import create_run, execute_run

    cfg = TrainConfig(model="seed-mlp", dataset="digits", epochs=1, batch_size=64, adversarial="pgd", adv_steps=2,
                      adv_eps=0.1)
    record = execute_run(store, create_run(store, cfg).id)
    assert record.status == "completed"
    assert 0.0 <= record.metrics["robust_accuracy"] <= record.metrics["test_accuracy"]
    assert record.metrics["robust_eps"] == 0.1


def test_robustness_command_prints_clean_and_adversarial_accuracy(store, capsys):
    assert main(["robustness", "starter", "--attack", "fgsm", "--eps", "0.1", "--n", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"clean_accuracy", "adversarial_accuracy", "eps", "attack", "n"} <= set(out)
    assert out["attack"] == "fgsm" and out["eps"] == 0.1 and out["n"] == 20
    assert out["adversarial_accuracy"] <= out["clean_accuracy"]


@pytest.mark.parametrize("argv, message", [
    (["robustness", "no-such-run"], "No run matches"),
    (["robustness", "starter", "--eps", "3"], "ε must be a number from 0 to 1"),
    (["robustness", "starter", "--n", "0"], "--n must be at least 1"),
])
def test_robustness_command_bad_input_exits_2_with_a_sentence(argv, message, store, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_one_image_attack_stays_in_the_ball_and_reports_both_answers():
    from core.insight.attacks import attack_image
    from core.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("seed-mlp").eval()
    image = np.zeros((28, 28), np.float32)
    image[6:22, 13:15] = 1.0  # a 1
    result = attack_image(model, image, None, AttackSettings("pgd", 0.2, 10))
    assert np.abs(result.perturbation).max() <= 0.2 + 1e-6
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert result.probs.shape == result.adversarial_probs.shape == (10,)
    target = int(result.probs.argmax())  # attacked against its own answer: that answer must lose probability
    assert result.adversarial_probs[target] < result.probs[target]

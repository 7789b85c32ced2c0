"""Transfer experiments (core.training.transfer) and the Invest arithmetic (core.insight.invest)."""
from __future__ import annotations

import json

import pytest
import torch

from core.errors import ConfigError
from core.insight.invest import (break_even_tasks, cheapest_reaching, fit_power_law, scaling_rows, summarise,
                                 verdict)
from core.models.zoo import build_model, head_name
from core.runs import RunStore
from core.training.config import TrainConfig
from core.training.jobs import JobManager
from core.training.train import new_state, train
from core.training.transfer import (ALL, TransferSpec, create_experiment, experiment_points, experiment_progress,
                                    parse_ks, pretrain_summary, run_experiment, stop_experiment, submit_experiment)
from core.inference.weights import load_source, model_source

TINY = dict(source="mnist", target="digits", ks=(1, 5), seeds=1, pretrain_steps=30, epochs=2, epoch_images=64,
            max_steps=8)


@pytest.fixture(scope="module")
def finished_experiment(tmp_path_factory, mnist):
    """A tiny MNIST → scikit-learn digits experiment trained to the end through the job manager."""
    store = RunStore(tmp_path_factory.mktemp("transfer"))
    jobs = JobManager(store)
    exp = create_experiment(store, TransferSpec(**TINY))
    assert submit_experiment(jobs, exp.id) == 7  # the pre-training run, then 3 strategies × 2 k × 1 seed
    for run_id in exp.run_ids():
        jobs.wait(run_id, timeout=300)
    return store, exp


def _weights(store, run_id):
    return load_source(model_source(store, run_id)).state_dict()


def test_a_tiny_experiment_runs_end_to_end_through_the_job_manager(finished_experiment):
    store, exp = finished_experiment
    assert experiment_progress(store, exp) == {"total": 7, "done": 7, "statuses": {"completed": 7}, "problem": None}
    points = experiment_points(store, exp)
    assert sorted((p["strategy"], p["k"]) for p in points) == sorted(
        (s, k) for s in ("probe", "finetune", "scratch") for k in (1, 5))
    for p in points:
        record = store.get(p["run_id"])
        assert p["test_accuracy"] == record.metrics["test_accuracy"]
        assert record.dataset == "digits" and record.config["per_class"] == p["k"]
        assert record.dataset_sizes["train"] == p["k"] * 10 * record.config["repeat"]
        assert p["flops"] > 0 and p["train_seconds"] > 0
    pre = pretrain_summary(store, exp)
    assert pre["status"] == "completed" and pre["dataset"] == "mnist" and pre["flops"] > 0
    same_budget = {(p["k"], store.get(p["run_id"]).timings["steps"]) for p in points}
    assert len(same_budget) == 2  # one step count per k, whatever the strategy


def test_a_linear_probe_leaves_the_backbone_bit_identical(finished_experiment):
    store, exp = finished_experiment
    backbone = _weights(store, exp.pretrain)
    head = head_name(build_model("seed-cnn")) + "."
    for point in (p for p in exp.points if p["strategy"] == "probe"):
        probed = _weights(store, point["run_id"])
        for name, tensor in backbone.items():
            if name.startswith(head):
                assert not torch.equal(probed[name], tensor)  # the new output layer learned
            else:
                assert torch.equal(probed[name], tensor), name


def test_fine_tuning_changes_the_backbone_and_scratch_does_not_start_from_it(finished_experiment):
    store, exp = finished_experiment
    backbone = _weights(store, exp.pretrain)
    conv = "net.0.weight"
    for point in exp.points:
        tuned = _weights(store, point["run_id"])
        if point["strategy"] == "finetune":
            assert not torch.equal(tuned[conv], backbone[conv])
    spec = exp.settings
    scratch = spec.point_config("scratch", 1, 0, exp.pretrain)
    assert scratch.init_from is None and scratch.transfer == "none"
    from core.data.datasets import load_splits

    splits = load_splits("digits")
    state = new_state(scratch, splits, torch.device("cpu"))
    torch.manual_seed(scratch.seed)
    fresh = build_model("seed-cnn").state_dict()
    assert all(torch.equal(state.model.state_dict()[k], fresh[k]) for k in fresh if "normalize" not in k)
    assert not torch.equal(state.model.state_dict()[conv], backbone[conv])
    # fine-tuning starts from the backbone everywhere but the output layer, which starts fresh
    tuned_cfg = spec.point_config("finetune", 1, 0, exp.pretrain)
    start = new_state(tuned_cfg, splits, torch.device("cpu"), init_weights=backbone).model.state_dict()
    head = head_name(build_model("seed-cnn"))
    assert torch.equal(start[conv], backbone[conv])
    assert torch.equal(start[f"{head}.weight"], fresh[f"{head}.weight"])


def test_a_probe_keeps_batchnorm_statistics_of_the_frozen_features(digits):
    torch.manual_seed(5)
    backbone = build_model("resnet").state_dict()
    cfg = TrainConfig(model="resnet", dataset="digits", init_from="starter", transfer="probe", per_class=3,
                      repeat=4, epochs=1, batch_size=8, seed=1)
    out = train(cfg, digits, init_weights=backbone)
    after = out.model.state_dict()
    head = head_name(out.model) + "."
    assert [k for k in backbone if not torch.equal(after[k], backbone[k])] == [head + "weight", head + "bias"]


def test_class_balanced_samples_are_seeded_and_nested(digits):
    five, ten = digits.per_class(5, seed=2), digits.per_class(10, seed=2)
    assert torch.bincount(five.train_y, minlength=10).tolist() == [5] * 10
    assert set(five.train_x.flatten(1).sum(1).tolist()) <= set(ten.train_x.flatten(1).sum(1).tolist())
    assert torch.equal(digits.per_class(5, seed=2).train_x, five.train_x)
    assert not torch.equal(digits.per_class(5, seed=3).train_x, five.train_x)
    with pytest.raises(ConfigError, match="only"):
        digits.per_class(10_000, seed=0)


def test_the_verdict_quotes_the_stored_results(finished_experiment):
    store, exp = finished_experiment
    points = experiment_points(store, exp)
    said = verdict(summarise(points), pretrain_summary(store, exp), 1)
    n = said.numbers
    stored = {p["strategy"]: store.get(p["run_id"]) for p in exp.points if p["k"] == 1}
    assert n["scratch_accuracy"] == stored["scratch"].metrics["test_accuracy"]
    assert n["transfer_accuracy"] == stored[n["strategy"]].metrics["test_accuracy"]
    assert n["transfer_accuracy"] == max(stored[s].metrics["test_accuracy"] for s in ("probe", "finetune"))
    assert n["pretrain_seconds"] == store.get(exp.pretrain).timings["train_seconds"]
    assert n["pretrain_flops"] == store.get(exp.pretrain).timings["train_flops"]
    assert f"{n['transfer_accuracy']:.1%}" in said.text and f"{n['scratch_accuracy']:.1%}" in said.text


def _rows(strategy, k, accs, flops):
    return [{"strategy": strategy, "k": k, "seed": s, "test_accuracy": a, "train_seconds": flops / 1e9,
             "flops": flops, "labels": k * 10} for s, a in enumerate(accs)]


def test_break_even_arithmetic_on_hand_made_numbers():
    assert break_even_tasks(100.0, 2.0, 12.0) == 10.0  # 100 + 10·2 = 10·12
    assert break_even_tasks(100.0, 5.0, 5.0) is None  # adapting costs as much as scratch: never
    points = (_rows("finetune", 10, [0.80, 0.84], 2e9) + _rows("scratch", 10, [0.60, 0.62], 2e9)
              + _rows("scratch", ALL, [0.85, 0.83], 12e9))
    summary = summarise(points)
    assert cheapest_reaching(summary, "scratch", 0.82)["k"] == ALL
    pretrain = {"run_id": "p", "flops": 100e9, "train_seconds": 100.0}
    said = verdict(summary, pretrain, 10)
    assert said.numbers["transfer_accuracy"] == pytest.approx(0.82)
    assert said.numbers["scratch_accuracy"] == pytest.approx(0.61)
    assert said.numbers["break_even_tasks"] == pytest.approx(10.0)
    assert "pays back its compute after 10 tasks" in said.text
    assert "+21.0 points" in said.text
    never = verdict(summarise(_rows("finetune", 10, [0.9], 2e9) + _rows("scratch", 10, [0.6], 2e9)), pretrain, 10)
    assert never.numbers["break_even_tasks"] is None and "does not" in never.text
    noise = verdict(summarise(_rows("finetune", 10, [0.70, 0.68, 0.74], 2e9)
                              + _rows("scratch", 10, [0.69, 0.72, 0.70], 2e9)), pretrain, 10)  # +0.3 points, ±3 spread
    assert noise.numbers["break_even_tasks"] is None and noise.numbers["seed_spread_points"] == pytest.approx(3.055, abs=1e-3)
    assert "+0.3 points" in noise.text and "within the spread between seeds (±3.1 points)" in noise.text
    # behind by less than the seeds' spread: nothing measurable either way, not "scratch does better"
    tied = verdict(summarise(_rows("finetune", 10, [0.69, 0.72, 0.70], 2e9)
                             + _rows("scratch", 10, [0.70, 0.68, 0.74], 2e9)), pretrain, 10)
    assert "The difference is within the spread between seeds" in tied.text and "does better" not in tied.text
    behind = verdict(summarise(_rows("finetune", 10, [0.29], 2e9) + _rows("scratch", 10, [0.51], 2e9)), pretrain, 10)
    assert "(−22.0 points" in behind.text and "training from scratch does better by 22.0 points" in behind.text
    rows = dict(behind.rows())  # "the numbers behind this verdict", as a person reads them
    assert rows["transfer_accuracy"] == "29.00%" and rows["points_gained"] == "-22.00 points"
    assert rows["pretrain_flops"] == "1.000e+11" and rows["pretrain_seconds"] == "100.0 s" and rows["k"] == "10"
    assert rows["break_even_tasks"] == "–" and rows["watts"] == "35 W" and rows["strategy"] == "finetune"


def test_a_power_law_fit_recovers_its_slope():
    xs = [1e9, 1e10, 1e11, 1e12]
    accs = [1 - 0.5 * x ** -0.1 for x in xs]
    fit = fit_power_law(xs, accs, "FLOPs")
    assert fit.b == pytest.approx(-0.1, abs=1e-9) and fit.a == pytest.approx(0.5, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.n == 4
    assert "× FLOPs^-0.100" in fit.equation and "multiplies the test error by 0.79" in fit.per_tenfold
    assert fit_power_law(xs[:2], accs[:2]) is None  # two runs do not make a trend
    # nor do three of two sizes: the line through two sizes fits them exactly (R² 1.00, the Invest page once said)
    assert fit_power_law([1e9, 1e9, 1e10], [0.9, 0.91, 0.95]) is None
    assert fit_power_law([1e9, 1e9, 1e10, 1e11], [0.9, 0.91, 0.95, 0.97]).n == 4


def test_scaling_rows_keep_finished_full_data_runs(finished_experiment):
    store, exp = finished_experiment
    assert [r["id"] for r in scaling_rows(store.list(), "mnist")] == [exp.pretrain]
    few = scaling_rows(store.list(), "digits", comparable_only=False)
    assert len(few) == 6 and scaling_rows(store.list(), "digits") == []
    from core.insight.invest import held_back

    assert held_back({"init_from": "starter", "drawings": "Class 3B"}) == "started from another model"  # FLOPs: its own
    assert held_back({"dp": True}) == "private (DP-SGD)" and held_back({"max_steps": 5, "transfer": "none"}) == ""


def test_an_experiment_stops_and_continues_after_a_restart(store, mnist):
    exp = create_experiment(store, TransferSpec(**{**TINY, "ks": (1,)}))
    jobs = JobManager(store)
    submit_experiment(jobs, exp.id)
    stop_experiment(jobs, exp.id)  # queued runs are cancelled at once, the running one within a batch
    for run_id in exp.run_ids():
        jobs.wait(run_id, timeout=120)
    assert experiment_progress(store, exp)["done"] < 4
    restarted = JobManager(store)  # a new server process: nothing of the old queue survives but the store
    assert submit_experiment(restarted, exp.id) >= 1
    for run_id in exp.run_ids():
        restarted.wait(run_id, timeout=300)
    assert experiment_progress(store, exp)["statuses"] == {"completed": 4}


def test_bad_specs_are_refused_with_a_sentence(store):
    with pytest.raises(ConfigError, match="different source"):
        TransferSpec(source="mnist", target="mnist")
    with pytest.raises(ConfigError, match="Seeds"):
        TransferSpec(seeds=0)
    with pytest.raises(ConfigError, match="'all'"):
        parse_ks("1,ten")
    assert parse_ks("all, 10,1") == (1, 10, ALL)
    with pytest.raises(ConfigError, match="needs a pre-trained model"):
        TrainConfig(transfer="probe")


def test_the_cli_prints_points_as_json_and_refuses_bad_input(store, mnist, capsys):
    from core.cli import main

    code = main(["transfer", "--source", "mnist", "--target", "digits", "--k", "1", "--seeds", "1",
                 "--pretrain-steps", "10", "--max-steps", "4", "--epochs", "1", "--json"])
    assert code == 0
    points = json.loads(capsys.readouterr().out)
    assert len(points) == 3
    assert {"strategy", "k", "seed", "test_accuracy", "train_seconds", "flops"} <= set(points[0])
    assert {p["strategy"] for p in points} == {"probe", "finetune", "scratch"}
    assert all(0 <= p["test_accuracy"] <= 1 and p["flops"] > 0 for p in points)
    assert main(["transfer", "--source", "mnist", "--target", "mnist"]) == 2
    assert "different source" in capsys.readouterr().err
    assert main(["transfer", "--resume", "nope"]) == 2


def test_both_datasets_pooled_can_be_the_source(store, mnist):
    from core.data.datasets import POOLED, is_available, load_splits

    if not is_available("fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed")
    pooled = load_splits(POOLED)
    assert pooled.sizes() == {"train": 110_000, "val": 10_000, "test": 20_000}
    assert torch.equal(pooled.train_x[:55_000], mnist.train_x)  # MNIST's own split first, then Fashion-MNIST's
    with pytest.raises(ConfigError, match="scikit-learn digits"):
        TransferSpec(source=POOLED, target="fashion-mnist")
    exp = create_experiment(store, TransferSpec(**{**TINY, "source": POOLED, "ks": (1,)}))
    run_experiment(store, exp.id)
    assert store.get(exp.pretrain).dataset == POOLED
    assert experiment_progress(store, exp)["statuses"] == {"completed": 4}

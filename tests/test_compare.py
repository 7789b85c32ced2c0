"""Run comparison in core: the Pareto front, settings that differ, the cost-benefit verdict, model cards."""
from __future__ import annotations

import pytest

from core.insight.compare import config_diff, cost_benefit_rows, model_card, pareto_front, versus_cheapest
from core.training.experiment import create_run, execute_run


def test_pareto_front_keeps_runs_no_other_run_beats_on_both_counts():
    costs = [10, 20, 30, 25, 10]
    gains = [0.97, 0.99, 0.995, 0.98, 0.96]
    assert pareto_front(costs, gains) == [True, True, True, False, False]
    assert pareto_front([5, 5], [0.9, 0.9]) == [True, True]  # equal runs dominate neither


def _rows(store, tiny_cfg):
    small = execute_run(store, create_run(store, tiny_cfg.replace(model="seed-mlp"), name="small").id)
    big = execute_run(store, create_run(store, tiny_cfg.replace(lr=3e-3), name="big").id)
    return small, big, cost_benefit_rows([small, big])


def test_cost_benefit_rows_and_the_verdict_against_the_cheapest(store, tiny_cfg):
    small, big, rows = _rows(store, tiny_cfg)
    assert [r["name"] for r in rows] == ["small", "big"]
    assert rows[0]["params"] == 101_770 and rows[1]["flops"] > rows[0]["flops"]
    assert all(r[f"pareto_{c}"] in (True, False) for r in rows for c in ("train_seconds", "params", "flops"))
    verdict = versus_cheapest(rows, "flops")
    cheap, accurate = min(rows, key=lambda r: r["flops"]), max(rows, key=lambda r: r["test_accuracy"])
    if cheap is accurate:
        assert verdict is None
    else:
        assert verdict["points"] == pytest.approx((accurate["test_accuracy"] - cheap["test_accuracy"]) * 100)
        assert verdict["cost_ratio"] == pytest.approx(accurate["flops"] / cheap["flops"])
        assert 0 < verdict["errors_cut"] <= 1


def test_verdict_reports_the_share_of_errors_removed():
    rows = [{"id": "a", "test_accuracy": 0.98, "flops": 1.0}, {"id": "b", "test_accuracy": 0.99, "flops": 4.0}]
    verdict = versus_cheapest(rows, "flops")
    assert verdict["points"] == pytest.approx(1.0) and verdict["errors_cut"] == pytest.approx(0.5)
    assert verdict["cost_ratio"] == 4.0
    assert versus_cheapest([rows[1], {**rows[0], "flops": 8.0}], "flops") is None  # cheapest is also best


def test_config_diff_and_model_card(store, tiny_cfg):
    small, big, _ = _rows(store, tiny_cfg)
    diff = config_diff([small, big])
    assert diff["model"] == ["seed-mlp", "seed-cnn"] and diff["lr"] == [1e-3, 3e-3]
    assert "seed" not in diff and "extra" not in diff
    card = model_card(big, store.read_metrics(big.id))
    assert card.startswith("# Model card: big") and big.weights_sha256 in card
    assert "| 2 |" in card and "## Intended use" in card


def test_a_stopped_run_stays_out_of_the_verdict_unless_asked_for(store, tiny_cfg):
    done = execute_run(store, create_run(store, tiny_cfg.replace(model="seed-mlp"), name="done").id)
    steps = iter(range(100))
    stopped = execute_run(store, create_run(store, tiny_cfg, name="stopped").id, should_stop=lambda: next(steps) >= 3)
    assert stopped.status == "cancelled" and stopped.metrics.get("test_accuracy") is not None
    assert [r["name"] for r in cost_benefit_rows([done, stopped])] == ["done"]
    assert [r["name"] for r in cost_benefit_rows([done, stopped], include_unfinished=True)] == ["done", "stopped"]

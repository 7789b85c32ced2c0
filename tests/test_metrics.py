"""Evaluation figures: equal to scikit-learn's, calibration, reject option, McNemar, cached predictions."""
from __future__ import annotations

import numpy as np
import torch
import pytest
from sklearn import metrics as skm

from core.inference.evaluation import split_predictions
from core.inference.weights import model_source
from core.training.experiment import create_run, execute_run
from core.inference.metrics import calibration, class_report, confusion, mcnemar, reject_curve


@pytest.fixture
def fixed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    preds = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 10, 500))
    return labels, preds


def test_class_report_equals_scikit_learn(fixed):
    labels, preds = fixed
    report = class_report(labels, preds)
    assert report.accuracy == skm.accuracy_score(labels, preds)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(labels, preds, average=average)
        assert getattr(report, average) == pytest.approx({"precision": p, "recall": r, "f1": f})
    f1 = skm.f1_score(labels, preds, average=None)
    assert [c["f1"] for c in report.per_class] == pytest.approx(list(f1))
    assert sum(c["support"] for c in report.per_class) == 500


def test_averages_are_over_the_classes_that_occur_so_a_small_perfect_set_scores_1():
    report = class_report(np.array([7]), np.array([7]))  # one drawing of a 7, read right
    assert report.macro == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    labels, preds = np.array([1, 1, 7, 7]), np.array([1, 7, 7, 7])
    p, r, f, _ = skm.precision_recall_fscore_support(labels, preds, average="macro")  # scikit-learn's own default
    assert report.macro != class_report(labels, preds).macro == pytest.approx({"precision": p, "recall": r, "f1": f})
    assert len(class_report(labels, preds).per_class) == 10  # every class still has its row


def test_confusion_matrix_rows_are_true_classes(fixed):
    labels, preds = fixed
    raw = confusion(labels, preds)
    assert raw.sum() == 500 and np.array_equal(raw, skm.confusion_matrix(labels, preds))
    assert np.allclose(confusion(labels, preds, normalize=True).sum(1), 1.0)


def test_calibration_of_a_perfectly_calibrated_and_an_overconfident_model():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.1, 1.0, 20_000)
    correct = rng.random(20_000) < conf  # right exactly as often as it claims
    probs = np.zeros((20_000, 10))
    labels = np.zeros(20_000, dtype=int)
    probs[:, 0] = conf
    probs[:, 1:] = ((1 - conf) / 9)[:, None]
    labels[~correct] = 1
    assert calibration(probs, labels).ece < 0.02
    overconfident = probs.copy()
    overconfident[:, 0] = 0.999  # same answers, claims near-certainty
    assert calibration(overconfident, labels).ece > 0.2


def test_reject_curve_trades_coverage_for_accuracy():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.95, 0.05]])
    labels = np.array([0, 1, 0, 0])  # the 0.6 one is wrong
    rows = reject_curve(probs, labels, np.array([0.0, 0.7]))
    assert rows[0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.75, "rejected": 0, "errors_kept": 1}
    assert rows[1]["coverage"] == 0.5 and rows[1]["accuracy"] == 1.0 and rows[1]["rejected"] == 2


def test_mcnemar_counts_discordant_pairs_and_tests_them():
    a = np.array([True] * 90 + [False] * 10)
    b = np.array([True] * 60 + [False] * 30 + [True] * 2 + [False] * 8)
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b) == (30, 2) and result.significant and result.p_value < 1e-5
    same = mcnemar(a, a)
    assert (same.only_a, same.only_b, same.p_value, same.significant) == (0, 0, 1.0, False)


def test_split_predictions_are_cached_by_weights_checksum(store, tiny_cfg, monkeypatch):
    run = execute_run(store, create_run(store, tiny_cfg).id)
    src = model_source(store, run.id)
    first = split_predictions(store, src, "test")
    cached = list((store.root / "cache").iterdir())
    assert len(cached) == 1 and src.sha256[:16] in cached[0].name
    from core.inference import evaluation

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cache was not used")

    with monkeypatch.context() as m:
        m.setattr(evaluation, "evaluate", no_recompute)
        again = split_predictions(store, src, "test")
    assert np.allclose(first.probs, again.probs) and again.accuracy == pytest.approx(run.metrics["test_accuracy"])
    cached[0].write_bytes(b"garbage")  # a damaged cache is recomputed, not trusted
    assert np.allclose(split_predictions(store, src, "test").probs, first.probs)


def test_a_finished_run_leaves_its_test_predictions_so_evaluate_opens_at_once(store, tiny_cfg, monkeypatch):
    run = execute_run(store, create_run(store, tiny_cfg).id)
    from core.inference import evaluation

    def no_recompute(*args, **kwargs):
        raise AssertionError("the run's own test predictions were not used")

    with monkeypatch.context() as m:
        m.setattr(evaluation, "evaluate", no_recompute)
        result = split_predictions(store, model_source(store, run.id), "test")
    assert result.accuracy == pytest.approx(run.metrics["test_accuracy"])


def test_predictions_cached_for_other_images_are_recomputed(store, tiny_cfg):
    run = execute_run(store, create_run(store, tiny_cfg).id)
    src = model_source(store, run.id)
    right = split_predictions(store, src, "test")
    evaluation_cache = next((store.root / "cache").iterdir())
    from core.inference.evaluation import remember_predictions
    from core.inference.metrics import EvalResult

    wrong = EvalResult.from_probs(right.probs[:-1], right.labels[:-1])  # one image short: not this split
    remember_predictions(store, src.sha256, src.dataset, "test", wrong)
    assert evaluation_cache.is_file()
    assert split_predictions(store, src, "test").n == right.n


def test_two_callers_at_once_evaluate_a_model_once(store, tiny_cfg, monkeypatch):
    import threading

    from core.inference import evaluation

    run = execute_run(store, create_run(store, tiny_cfg).id)
    for f in (store.root / "cache").iterdir():
        f.unlink()  # as for a model imported from a file: nothing cached yet
    calls = []
    real = evaluation.evaluate

    def slow_evaluate(*args, **kwargs):
        calls.append(1)
        threading.Event().wait(0.3)  # long enough for the second caller to arrive meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", slow_evaluate)
    src = model_source(store, run.id)
    results = []
    threads = [threading.Thread(target=lambda: results.append(split_predictions(store, src, "test")))
               for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and len(results) == 2
    assert torch.equal(results[0].probs, results[1].probs)

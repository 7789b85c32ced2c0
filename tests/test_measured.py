"""The Train page quotes the benchmarks' measured figures for a preset, and nothing for one never measured."""
from __future__ import annotations

import json

from core.training import measured


def test_a_preset_sentence_quotes_the_benchmark_files(tmp_path, monkeypatch):
    (tmp_path / "presets.json").write_text(json.dumps({
        "fast": {"test_accuracy": 0.9922, "train_seconds": 24.7, "threads": 2, "device": "cpu"},
        "best": {"test_accuracy": 0.997, "train_seconds": 643.1, "threads": 2, "device": "cpu",
                 "cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16"}}))
    (tmp_path / "speed.json").write_text(json.dumps({"time_to_99": {
        "rows": [{"fast_accuracy": 0.9905}, {"fast_accuracy": 0.991}, {"fast_accuracy": 0.989}],
        "fast_median_seconds": 12.3, "recipe_median_seconds": 15.0}}))
    monkeypatch.setattr(measured, "RESULTS", tmp_path)
    measured._read.cache_clear()
    try:
        fast = measured.preset_sentence("fast")
        assert "99.22% test accuracy after 24.7 s" in fast and "2 CPU cores" in fast
        assert "median of 3 seeds, 2 reaching 99%): 12.3 s, against 15.0 s" in fast
        best = measured.preset_sentence("best")
        assert "99.70% test accuracy after 10.7 min" in best
        assert "2 CPU cores of an Intel Xeon Processor, in bf16" in best  # the machine and precision it ran in
        assert measured.preset_sentence("robust") is None  # never benchmarked: no figure is made up
    finally:
        measured._read.cache_clear()


def test_missing_or_broken_result_files_give_no_sentence(tmp_path, monkeypatch):
    (tmp_path / "presets.json").write_text("{not json")
    monkeypatch.setattr(measured, "RESULTS", tmp_path)
    measured._read.cache_clear()
    try:
        assert measured.preset_sentence("fast") is None
    finally:
        measured._read.cache_clear()

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
    (tmp_path / "gpu_check.json").write_text(json.dumps({"device": "NVIDIA H200", "time_to_99": {
        "fast": [{}, {}, {}], "fast_median_seconds": 0.174, "recipe_median_seconds": 0.471}, "runs": {
        "fast/cpu-reference": {"test_accuracy": 0.97, "train_seconds": 0.3},
        "fast/cuda-fp32": {"test_accuracy": 0.9915, "train_seconds": 0.133},
        "fast/cuda-bf16": {"test_accuracy": 0.9918, "train_seconds": 0.17},
        "best/cuda-bf16": {"test_accuracy": 0.9972, "train_seconds": 10.015}}}))
    monkeypatch.setattr(measured, "RESULTS", tmp_path)
    measured._read.cache_clear()
    try:
        fast = measured.preset_sentence("fast")
        assert "99.22% test accuracy after 24.7 s" in fast and "2 CPU cores" in fast
        assert "median of 3 seeds, 2 reaching 99%): 12.3 s, against 15.0 s" in fast
        assert fast.endswith(" On a GPU (NVIDIA H200, `benchmarks/gpu_check.py`): 99.18% after 0.17 s in bf16, 99.15% "
                             "after 0.13 s in fp32; time to 99% 0.17 s (median of 3 seeds), against 0.47 s for the "
                             "recipe.")  # the GPU's figures after this machine kind's, never instead of them
        best = measured.preset_sentence("best")
        assert "99.70% test accuracy after 10.7 min" in best
        assert "2 CPU cores of an Intel Xeon Processor, in bf16" in best  # the machine and precision it ran in
        assert best.endswith("On a GPU (NVIDIA H200, `benchmarks/gpu_check.py`): 99.72% after 10.0 s in bf16.")
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

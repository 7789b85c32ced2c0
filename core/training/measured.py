"""What the benchmarks measured for each preset on this project's machine kind, for the Train page to quote.

`preset_sentence("fast")` -> "Measured on 2 CPU cores: 99.22% test accuracy after 24.7 s of training …", read from
benchmarks/results/presets.json (benchmarks/presets.py) and, for `fast`, speed.json's time to 99% (benchmarks/speed.py);
then what gpu_check.json (benchmarks/gpu_check.py) measured on a GPU, where it ran the preset. None for a preset never
benchmarked. The figures are measurements, not promises: another machine differs.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@lru_cache(maxsize=4)
def _read(name: str) -> dict:
    try:
        data = json.loads((RESULTS / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def preset_sentence(preset: str) -> str | None:
    """One sentence with the preset's measured test accuracy and training time, and time to 99% where measured."""
    row = _read("presets.json").get(preset)
    if not isinstance(row, dict) or row.get("test_accuracy") is None or not row.get("train_seconds"):
        return None
    where = f"{row.get('threads', '?')} CPU cores" if row.get("device", "cpu") == "cpu" else str(row["device"])
    if row.get("cpu") and row["cpu"] not in ("x86_64", "aarch64", "unknown CPU"):  # the model, where it was recorded
        where += f" of an {row['cpu'].replace('(R)', '').replace('(TM)', '')}"
    if row.get("precision"):  # what `auto` chose there: bf16 where native and measured faster
        where += f", in {row['precision']}"
    text = (f"Measured on {where} (`benchmarks/presets.py`): {row['test_accuracy']:.2%} test accuracy after "
            f"{_duration(row['train_seconds'])} of training")
    race = _read("speed.json").get("time_to_99") if preset == "fast" else None
    if isinstance(race, dict) and race.get("rows"):
        reached = sum(r["fast_accuracy"] >= 0.99 for r in race["rows"])
        text += (f"; time to 99% (`benchmarks/speed.py`, median of {len(race['rows'])} seeds, {reached} reaching 99%): "
                 f"{_duration(race['fast_median_seconds'])}, against {_duration(race['recipe_median_seconds'])} for "
                 "the best public recipe in the same run")
    return text + "." + _on_a_gpu(preset)


def _on_a_gpu(preset: str) -> str:
    """' On a GPU (NVIDIA H200, …): …' with the preset's figures in each precision and, for `fast`, its time to 99%;
    '' where no GPU ran it."""
    report = _read("gpu_check.json")
    runs = report.get("runs") if isinstance(report.get("runs"), dict) else {}
    figures = [f"{run['test_accuracy']:.2%} after {_duration(run['train_seconds'])} in {precision}"
               for precision in ("bf16", "fp32") if isinstance(run := runs.get(f"{preset}/cuda-{precision}"), dict)]
    if not figures:
        return ""
    text = f" On a GPU ({report.get('device', 'unnamed')}, `benchmarks/gpu_check.py`): {', '.join(figures)}"
    race = report.get("time_to_99") if preset == "fast" else None
    if isinstance(race, dict) and race.get("fast"):
        text += (f"; time to 99% {_duration(race['fast_median_seconds'])} (median of {len(race['fast'])} seeds), "
                 f"against {_duration(race['recipe_median_seconds'])} for the recipe")
    return text + "."


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"

"""benchmarks/gpu_check.py, the one call a session lent a GPU makes: its every part runs (here on the CPU, each run
capped at a few steps) and writes the JSON it promises. No GPU is needed or used."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_the_gpu_check_runs_every_part_and_writes_one_json(mnist, tmp_path):  # mnist: skipped without the data
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu",
                           "--presets", "fast", "--seeds", "0", "1", "--steps", "5", "--cpu-steps", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report == json.loads(done.stdout)
    assert report["device"] == "cpu (no GPU used)" and report["figures_read_back_every_steps"] == 1
    ttn = report["time_to_99"]
    assert [r["steps"] for r in ttn["fast"]] == [5, 5] and len(ttn["public_recipe"]) == 2
    assert ttn["ratio"] == round(ttn["fast_median_seconds"] / ttn["recipe_median_seconds"], 3) > 0
    assert ttn["target_seconds"] == 0.5 and ttn["all_fast_seeds_reach_99"] is False  # 5 steps reach no 99%
    assert report["throughput"]["seed_cnn"]["steps"] == 5 and report["throughput"]["ratio"] > 0
    runs = report["runs"]
    assert sorted(runs) == ["fast/cpu-bf16", "fast/cpu-fp32", "fast/cpu-reference"]
    assert (runs["fast/cpu-fp32"]["precision"], runs["fast/cpu-bf16"]["precision"]) == ("fp32", "bf16")
    assert runs["fast/cpu-reference"]["steps"] == 3 and runs["fast/cpu-bf16"]["steps"] == 5
    assert all(r["status"] == "completed" and r["data_on"] == "cpu" for r in runs.values())

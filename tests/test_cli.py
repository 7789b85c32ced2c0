"""The digit-lab command line: a real MNIST run with --json, listing, eval, resume, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.cli import main
from tests.conftest import REPO


def test_real_mnist_run_on_a_small_slice_through_the_cli(mnist, store):
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "train", "--preset", "seed-cnn", "--epochs", "1",
         "--train-size", "3000", "--batch-size", "100", "--no-train-on-val", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ}, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.75  # 30 steps on 3k images; chance is 0.10
    assert summary["train_seconds"] > 0 and summary["images_per_second"] > 0
    record = store.get(summary["run_id"])
    assert record.dataset_sizes["train"] == 3000 and record.dataset_sizes["test"] == 10_000


def _json_out(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_runs_eval_and_resume_commands(store, capsys):
    assert main(["train", "--dataset", "digits", "--model", "seed-mlp", "--epochs", "1", "--json",
                 "--name", "cli-run"]) == 0
    run_id = _json_out(capsys)["run_id"]
    assert main(["runs", "--json"]) == 0
    assert [r["name"] for r in _json_out_all(capsys)] == ["cli-run"]
    assert main(["eval", "cli-run", "--json"]) == 0
    result = _json_out(capsys)
    assert result["run_id"] == run_id and result["images"] == 360
    assert main(["resume", run_id]) == 2  # a completed run does not resume
    assert "only cancelled, interrupted, failed runs resume" in capsys.readouterr().err
    assert main(["runs", "--status", "failed"]) == 0
    assert capsys.readouterr().out == "No runs match.\n"  # not "No runs yet": there is one, but not failed
    with pytest.raises(SystemExit) as exit_info:  # a misspelt filter is refused, not answered with an empty list
        main(["runs", "--status", "complete"])
    assert exit_info.value.code == 2 and "invalid choice: 'complete'" in capsys.readouterr().err


def _json_out_all(capsys):
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-1"], "Learning rate (peak) must be a number in (0, 10] (got -1.0). [--lr]"),
    (["train", "--model", "nope"], "Model must be one of"),
    (["eval", "no-such-run"], "No run matches"),
    (["train", "--max-steps", "-3"], "Stop after steps (0 = no limit) must be 0 or a whole number from 1"),
])
def test_bad_input_exits_2_with_a_message(argv, message, store, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_dataset_exits_2_naming_the_folder(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path / "nowhere"))
    assert main(["train", "--preset", "fast", "--json"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nowhere") in err and "--dataset digits" in err
    assert store.list() == []  # no run is created for a run that cannot start


def test_diverged_run_exits_1(store, capsys):
    assert main(["train", "--dataset", "digits", "--optimizer", "sgd", "--lr", "10", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["status"] == "diverged"
    assert "note: A learning rate of 10 with SGD will likely diverge" in out.err  # the Train page's warnings, too


def test_unparseable_flag_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2


def test_the_starter_script_answers_help_and_refuses_options_without_retraining():
    # It overwrites core/assets when it runs: asking it for help once retrained and replaced the shipped starter
    script = str(REPO / "scripts" / "train_starter.py")
    assets = {p.name: p.stat().st_mtime_ns for p in (REPO / "core" / "assets").iterdir()}
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "Writes starter.safetensors" in shown.stdout
    wrong = subprocess.run([sys.executable, script, "--epochs", "1"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "unrecognized arguments" in wrong.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (REPO / "core" / "assets").iterdir()} == assets

"""The load script, small: 3 Chromium sessions draw and predict for 30 s while a training job runs on the server."""
from __future__ import annotations


from tests.conftest import REPO
from tests.e2e.conftest import load_benchmark


def test_three_sessions_predict_without_errors_while_a_training_job_runs(browser_type_launch_args):
    load = load_benchmark()
    result = load.run_load(sessions=3, seconds=30, timeout_s=240,
                           chromium=browser_type_launch_args["executable_path"],
                           chromium_args=browser_type_launch_args["args"],
                           artifacts=REPO / "test-artifacts" / "load")  # screenshots of pages that met an error
    print(load.table(result))
    assert result.errors == 0, result.error_samples
    assert min(result.predicts_per_session) >= 2, result.predicts_per_session
    assert result.rerun_samples == result.predicts  # every predict's server time was seen on the websocket
    assert result.predict_server_samples == result.predicts  # ... and on the server's own clock
    assert 0 < result.predict_script_p50_ms <= result.predict_server_p50_ms
    assert 0 < result.predict_cpu_p50_ms <= result.predict_script_p50_ms  # the script's own CPU time ...
    assert result.predict_runqueue_p95_ms is not None and result.predict_runqueue_p95_ms >= 0  # ... and its wait
    assert result.train_step_start is not None and result.train_step_end > result.train_step_start
    assert result.train_stopped  # the job was stopped at the end, not left running
    assert result.server_rss_peak_mb > 0


def test_the_load_and_pages_scripts_say_which_data_the_server_shows(tmp_path, monkeypatch):
    load = load_benchmark()
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path))  # no MNIST there: the app falls back to the built-in digits
    assert load.data_line().startswith(f"data: MNIST not found in {tmp_path}") and "built-in digits" in load.data_line()
    shared = REPO.parent / "shared" / "data"
    if (shared / "MNIST").is_dir():
        monkeypatch.setenv("DIGIT_LAB_DATA", str(shared))
        assert load.data_line() == f"data: MNIST from {shared}"

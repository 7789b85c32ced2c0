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
    assert result.train_step_start is not None and result.train_step_end > result.train_step_start
    assert result.train_stopped  # the job was stopped at the end, not left running
    assert result.server_rss_peak_mb > 0

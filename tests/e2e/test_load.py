"""The load script: small (3 Chromium sessions draw and predict for 30 s while a training job runs on the server),
and the parts it measures with: the CPU each side uses, Playwright's driver put behind the server."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

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
    cores = result.cpu_cores  # what each side took while drawing: the server, its training, the browsers, ...
    assert cores["server"] > 0 and cores["training"] > 0 and cores["browsers"] > 0, cores
    # The reference in the same run: a bare 20 ms CPU burst every 0.2-0.6 s beside the server, in its own process
    assert result.probe_burst_ms == 20 and result.probe_bursts >= 30 and cores["reference"] > 0, cores
    assert 20 * 0.8 <= result.probe_wall_p50_ms <= result.probe_wall_p95_ms, result
    assert 0 <= result.probe_runqueue_p50_ms <= result.probe_runqueue_p95_ms <= result.probe_wall_p95_ms
    assert "reference, same run: a bare 20 ms CPU burst" in load.table(result)
    assert sum(cores.values()) <= result.cpu_count * 1.1, cores  # /proc's ticks, not a guess


def test_the_cpu_probe_times_bursts_of_the_cpu_it_was_asked_for(tmp_path):
    # Calibrated on CPU time, so each burst uses about --burst-ms of CPU even on busy cores; wall >= CPU.
    out = tmp_path / "probe.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_probe.py"), "--seconds", "2",
                           "--burst-ms", "15", "--json", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    assert found == json.loads(done.stdout) and found["burst_ms"] == 15 and found["bursts"] >= 3
    assert all(10 <= cpu <= 25 for cpu in found["cpu_ms"]), found["cpu_ms"]
    assert all(wall >= cpu * 0.98 for wall, cpu in zip(found["wall_ms"], found["cpu_ms"]))
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cpu_probe.py"), "--seconds", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must be positive" in bad.stderr


def test_cpu_by_side_counts_a_servers_child_as_its_training(tmp_path):
    load = load_benchmark()
    script = tmp_path / "burner.py"
    script.write_text("import os, subprocess, sys, time\n"
                      "if sys.argv[1:] == ['child']:\n"
                      "    t = time.process_time()\n"
                      "    while time.process_time() - t < 0.5:\n"
                      "        pass\n"
                      "    print('burnt', os.getpid(), flush=True)\n"
                      "    time.sleep(60)\n"
                      "else:\n"
                      "    subprocess.run([sys.executable, __file__, 'child'])\n")
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        said, child = server.stdout.readline().split()
        assert said == "burnt"  # the child has used its 0.5 s of CPU and sleeps
        sides = load.cpu_seconds_by_side(server.pid)
    finally:
        if child is not None:
            os.kill(int(child), signal.SIGKILL)
        server.kill()
    assert sides["training"] >= 0.45, sides  # the server's child: its training worker in the load script
    assert sides["server"] < 0.45, sides  # the parent only waited


def _reaper(tmp_path) -> subprocess.Popen:
    """A process that, on a line on its stdin, starts a child burning 0.5 s of CPU, waits for it, says 'reaped' and
    sleeps."""
    script = tmp_path / "reaper.py"
    script.write_text("import subprocess, sys, time\n"
                      "if sys.argv[1:] == ['child']:\n"
                      "    t = time.process_time()\n"
                      "    while time.process_time() - t < 0.5:\n"
                      "        pass\n"
                      "else:\n"
                      "    sys.stdin.readline()\n"
                      "    subprocess.run([sys.executable, __file__, 'child'])\n"
                      "    print('reaped', flush=True)\n"
                      "    time.sleep(60)\n")
    return subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_cpu_by_side_still_counts_a_process_that_ended_within_the_window(tmp_path):
    # Chromium's renderers come and go while the sessions draw: one that ended must not take its CPU with it
    # (the sides' differences went negative)
    load = load_benchmark()
    with _reaper(tmp_path) as parent:
        try:
            before = load.cpu_seconds_by_side(None)
            parent.stdin.write("go\n")
            parent.stdin.flush()
            assert parent.stdout.readline().strip() == "reaped"  # the child burnt 0.5 s and is gone
            after = load.cpu_seconds_by_side(None)
        finally:
            parent.kill()
    assert after["driver"] - before["driver"] >= 0.45, (before, after)  # in its parent's, below this process
    # (other processes on the machine, "other", come and go as they like)
    assert all(after[side] - before[side] >= -0.02 for side in before if side != "other"), (before, after)


def test_cpu_by_side_keeps_a_training_worker_the_server_has_waited_for_as_training(tmp_path):
    # The server waiting for its worker must not move the worker's lifetime of CPU from training to the server
    load = load_benchmark()
    with _reaper(tmp_path) as server:
        try:
            server.stdin.write("go\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "reaped"
            sides = load.cpu_seconds_by_side(server.pid)
        finally:
            server.kill()
    assert sides["training"] >= 0.45, sides
    assert sides["server"] < 0.45, sides


def test_the_load_and_pages_scripts_say_which_data_the_server_shows(tmp_path, monkeypatch):
    load = load_benchmark()
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path))  # no MNIST there: the app falls back to the built-in digits
    assert load.data_line().startswith(f"data: MNIST not found in {tmp_path}") and "built-in digits" in load.data_line()
    shared = REPO.parent / "shared" / "data"
    if (shared / "MNIST").is_dir():
        monkeypatch.setenv("DIGIT_LAB_DATA", str(shared))
        assert load.data_line() == f"data: MNIST from {shared}"


def test_browsers_nice_puts_playwrights_driver_behind_the_server_in_a_session_of_its_own(tmp_path, monkeypatch):
    load = load_benchmark()
    monkeypatch.setenv("PLAYWRIGHT_NODEJS_PATH", str(load.driver_behind(tmp_path, 7)))
    seen: dict[str, object] = {}

    from server_timing import process_table  # beside load.py, which put its folder on the path

    def drivers() -> set[int]:  # Playwright drivers started by this process (the browser tests' may be one)
        return {pid for pid, (parent, _, command) in process_table().items()
                if parent == os.getpid() and "cli.js" in command}

    async def start_a_driver() -> None:  # as load.py does with --browsers-nice
        before = drivers()
        async with async_playwright():
            (driver,) = drivers() - before
            seen["session"], seen["nice"] = os.getsid(driver) == driver, os.getpriority(os.PRIO_PROCESS, driver)
            if Path("/proc/self/autogroup").exists():  # a kernel with autogroups: the group behind the server
                seen["group"] = Path(f"/proc/{driver}/autogroup").read_text().split()[-1]

    # A thread with its own event loop: the browser tests' sync Playwright may be running in this one
    thread = threading.Thread(target=lambda: asyncio.run(start_a_driver()))
    thread.start()
    thread.join(timeout=60)
    assert seen["session"]  # a session of its own: the benchmark's (maybe a terminal's) keeps its priority
    assert seen["nice"] == 7 and seen.get("group", "7") == "7"


needs_two_cores = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                                     reason="splitting the cores needs Linux and two of them")


@needs_two_cores
def test_server_cores_puts_the_server_and_its_children_apart_from_the_visitors(tmp_path):
    load = load_benchmark()
    mine = sorted(os.sched_getaffinity(0))
    server_side, visitors_side = load.split_cores(1)
    assert server_side == {mine[0]} and visitors_side == set(mine[1:])
    for impossible in (0, len(mine), -1):
        with pytest.raises(ValueError, match="cannot give the server"):
            load.split_cores(impossible)
    # A process started as the server is (in an on_cores block) runs there, and so does the child it starts (the
    # training job's worker); the block gives this thread its cores back, and other threads never lose theirs
    script = tmp_path / "parent.py"
    script.write_text("import os, subprocess, sys\n"
                      "if sys.argv[1:] == ['child']:\n"
                      "    print(sorted(os.sched_getaffinity(0)), flush=True)\n"
                      "else:\n"
                      "    subprocess.run([sys.executable, __file__, 'child'])\n")
    ready, read, other = threading.Event(), threading.Event(), []

    def sampler() -> None:  # a thread already running, as the benchmark's memory sampler is
        ready.wait(10)
        other.append(os.sched_getaffinity(0))
        read.set()

    thread = threading.Thread(target=sampler)
    thread.start()
    with load.on_cores(server_side):
        try:
            done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        finally:
            ready.set()
            read.wait(10)
    thread.join()
    assert done.stdout.strip() == str(sorted(server_side)), done
    assert os.sched_getaffinity(0) == set(mine) and other == [set(mine)]
    with load.on_cores(None):  # without a split, children run wherever the benchmark may
        undivided = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert undivided.stdout.strip() == str(mine), undivided
    with pytest.raises(OSError), load.on_cores(server_side):  # a start that fails gives the cores back too
        subprocess.Popen([str(tmp_path / "no-such-program")])
    assert os.sched_getaffinity(0) == set(mine)


@needs_two_cores
def test_server_cores_runs_the_visitors_side_apart_and_gives_the_cores_back(monkeypatch):
    load = load_benchmark()
    mine = os.sched_getaffinity(0)
    seen: dict[str, object] = {}

    def start_server(home, cores=None):  # where the browsers' side runs when the server is started, and where it goes
        seen["visitors"], seen["server"] = os.sched_getaffinity(0), cores
        raise RuntimeError("no server in this test")

    monkeypatch.setattr(load, "start_server", start_server)
    result = load.run_load(sessions=1, seconds=1, timeout_s=30, server_cores=1, log=lambda message: None)
    server_side, visitors_side = load.split_cores(1)
    assert seen == {"visitors": visitors_side, "server": server_side}
    assert os.sched_getaffinity(0) == mine  # the caller's cores are back, after a failure too
    assert result.server_cores == sorted(server_side) and result.visitor_cores == sorted(visitors_side)
    assert result.errors == 1 and "no server in this test" in result.error_samples[0]
    assert "as if the visitors were on machines of their own" in load.table(result)


def test_server_cores_refuses_what_it_cannot_do_with_a_sentence():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    for argv, said in ((["--server-cores", str(cores)], "cannot give the server"),
                       (["--server-cores", "1", "--url", "http://127.0.0.1:1"], "needs a server this script starts")):
        done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load.py"), *argv], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and said in done.stderr, done.stderr

"""`streamlit` with a stopwatch on every script run, for the benchmarks' server-time figures; and, for the benchmarks
and the browser tests, starting such a server, waiting for it, reading its log and measuring its process.

    python benchmarks/server_timing.py LOG.jsonl run dashboard/app.py [streamlit options]
Runs Streamlit's own command line unchanged, except that each script run appends one JSON line to LOG.jsonl:
    {"session": id, "received": t, "start": t, "end": t, "cpu": s, "runqueue": s, "predicted": bool}
(times in time.monotonic() seconds). `received` is when the server took the oldest rerun request this run answered
off the websocket (so `end - received` is the server's time for a request: its queue plus the script); `start`/`end`
bracket the script run; of that, `cpu` is the time its thread ran on a core and `runqueue` the time it waited,
runnable, for one (Linux schedstat; 0 elsewhere), the rest it waited for the GIL, a lock or I/O. Reruns that
interrupt a run are folded in (the visitor waits for them too). `predicted` says whether the run read a drawing
(core.inference.predict.Predictor.predict was called in it). Nothing in the app changes, and nothing of the app is
imported before its first run (importing torch here would hide its cost from the first page): the predict is noted
from the first run after the one that imported it (a page's first run never reads a drawing).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
TIMING_LOG = "timing.jsonl"  # in the run store of a server started here: one line per script run
SERVERS: list[subprocess.Popen] = []  # started here: a benchmark's watchdog kills them if all else hangs

_lock = threading.Lock()
_pending: dict[str, list[float]] = defaultdict(list)  # session id -> arrival times of rerun requests not yet answered
_local = threading.local()


def runqueue_wait() -> float:
    """Seconds the calling thread has waited runnable for a core so far (Linux schedstat), 0 where unknown. The
    server's script runs and the reference burst (cpu_probe.py) are both measured with this."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def install(log_path: str) -> None:
    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    log = open(log_path, "a", buffering=1)
    handle_backmsg, run_script = AppSession.handle_backmsg, ScriptRunner._run_script

    def timed_backmsg(self, msg) -> None:
        if msg.WhichOneof("type") == "rerun_script":
            with _lock:
                _pending[self.id].append(time.monotonic())
        handle_backmsg(self, msg)

    def timed_run(self, rerun_data) -> None:
        _local.predicted = False
        note_predictions()
        queued = runqueue_wait()  # before the clocks start: after a pause, opening a /proc file cost 6-10 ms of CPU
        start, cpu = time.monotonic(), time.thread_time()
        try:
            run_script(self, rerun_data)
        finally:
            end, cpu, queued = time.monotonic(), time.thread_time() - cpu, runqueue_wait() - queued
            with _lock:
                waiting = _pending[self._session_id]
                answered = [t for t in waiting if t <= end]
                _pending[self._session_id] = [t for t in waiting if t > end]
            received = min(answered, default=start)
            log.write(json.dumps({"session": self._session_id, "received": received, "start": start, "end": end,
                                  "cpu": cpu, "runqueue": queued, "predicted": _local.predicted}) + "\n")

    def note_predictions() -> None:
        predictor = getattr(sys.modules.get("core.inference.predict"), "Predictor", None)  # None: not (yet) imported
        with _lock:
            if predictor is None or getattr(predictor.predict, "noted", False):
                return
            predict = predictor.predict

            def noted_predict(self, image):
                _local.predicted = True
                return predict(self, image)

            noted_predict.noted = True
            predictor.predict = noted_predict

    AppSession.handle_backmsg = timed_backmsg
    ScriptRunner._run_script = timed_run


# -- starting a timed server, and measuring it and the machine ----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def data_line() -> str:
    """Which data a server started here will show: MNIST from the data root, or the built-in digits it falls back to
    (on which nothing is warmed up). The figures differ: say which."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from core.data.datasets import data_root, is_available

    root = data_root()
    return (f"data: MNIST from {root}" if is_available("mnist") else
            f"data: MNIST not found in {root} (set DIGIT_LAB_DATA): the app shows the built-in digits, "
            "and nothing is warmed up")


def cpu_count() -> int:
    """The cores this process may use: core.training.devices.usable_cores, without importing torch (this module is
    the timed server's entry point and the CPU probe's import)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_cores(server_cores: int) -> tuple[set[int], set[int]]:
    """This process's cores cut in two: the first `server_cores` for the server side (the server, its training job,
    the reference), the rest for the visitors' side (the browsers, Playwright's driver, the benchmark itself)."""
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not 0 < server_cores < len(mine):
        raise ValueError(f"cannot give the server {server_cores} of {len(mine)} cores and the browsers the rest"
                         + ("" if mine else " (core affinity is Linux only)"))
    return set(mine[:server_cores]), set(mine[server_cores:])


@contextlib.contextmanager
def on_cores(cores: set[int] | None) -> Iterator[None]:
    """Processes started in this block run on `cores` only (None: wherever this thread may), and so do theirs.

    Linux keeps an affinity per thread and a child inherits its starting thread's: this thread's is narrowed for the
    block and put back after. Not a preexec_fn, which runs Python between fork and exec and is unsafe while other
    threads run (the benchmark's sampler, watchdog and browser driver). Threads already running keep their own
    cores; one started inside the block would inherit the narrowed ones, so the block holds only the start."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def machine_line() -> str:
    """A benchmark's first line: the cores, the CPU, the load when it starts and which data a server will show."""
    return f"{cpu_count()} CPU cores ({cpu_model()}), load average {os.getloadavg()[0]:.1f}; {data_line()}"


def process_table() -> dict[int, tuple[int, tuple[float, float], str]]:
    """Every process now, from /proc: pid -> (parent pid, CPU seconds used so far (user + system) as (its own, that
    of the children it has waited for), command line). A process that ends while it is read is left out."""
    tick, table = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ticks = list(map(int, fields[11:15]))
                table[int(entry.name)] = (int(fields[1]), (sum(ticks[:2]) / tick, sum(ticks[2:]) / tick), command)
            except (OSError, IndexError, ValueError):
                continue
    return table


def descendants(table: dict[int, tuple[int, tuple[float, float], str]], root: int) -> set[int]:
    """`root` and every process below it in `table` (from `process_table`)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` and all its descendants (from /proc), in MB; None once it is gone."""
    total = 0
    for p in descendants(process_table(), pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])  # kB
        except OSError:
            if p == pid:
                return None
    return total / 1024


def cpu_seconds_by_side(server_pid: int | None, reference_pid: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each side of a benchmark, from /proc: `server` (the server's
    process), `training` (its children: the training worker), `browsers` (Chromium's processes), `driver`
    (Playwright's driver and this script), `reference` (the load benchmark's CPU probe) and `other`. Two calls'
    difference over a window is what each side took in it. A process that ends in between is still counted: once
    its parent has waited for it, its time is in its parent's, on its parent's side (Chromium's renderers come and
    go under Chromium's own processes), except the server's: a training worker it has waited for stays `training`;
    one left to init counts as `other`."""
    table = process_table()
    below_server = descendants(table, server_pid) if server_pid else set()
    below_me = descendants(table, os.getpid())
    sides = {"server": 0.0, "training": 0.0, "browsers": 0.0, "driver": 0.0, "other": 0.0}
    if reference_pid:
        sides["reference"] = 0.0
    for pid, (_, (own, reaped), command) in table.items():
        if pid == server_pid:
            side = "server"
            sides["training"] += reaped  # the server's children are its training workers
            reaped = 0.0
        elif reference_pid and pid == reference_pid:
            side = "reference"
        elif pid in below_server:
            side = "training"
        elif "chrom" in command:
            side = "browsers"
        elif pid in below_me:
            side = "driver"
        else:
            side = "other"
        sides[side] += own + reaped
    return sides


class RssSampler(threading.Thread):
    """Samples a process tree's RSS every second until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self._stop_event = pid, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append(value)
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        value = rss_mb(self.pid)
        if value is not None:
            self.samples.append(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.3)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode}")
    raise RuntimeError(f"{url} did not become healthy within {timeout_s:.0f} s")


def start_server(home: Path, cores: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run dashboard/app.py` on 127.0.0.1 and a free port, over the run store `home`; every script run
    is timed into home/timing.jsonl (benchmarks/server_timing.py). `cores`: only on these (its training job too).
    The server gets a session of its own, as a teacher's `streamlit run` in a terminal has: Linux shares the CPU
    between sessions first (autogroups), and in the benchmark's session the server would split its share with
    Playwright's driver, which works for the browsers (it relays every mouse move of every visitor)."""
    port = _free_port()
    log = open(home / "server.log", "w")
    env = {**os.environ, "DIGIT_LAB_HOME": str(home), "DIGIT_LAB_WORKER": "process",
           "DIGIT_LAB_SERVER_THREADS": ""}  # the server as shipped, even when run from the tests
    with on_cores(cores):
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / "server_timing.py"), str(home / TIMING_LOG), "run",
             "dashboard/app.py", "--server.headless", "true", "--server.port", str(port), "--server.address",
             "127.0.0.1", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # as from a terminal of its own: not in the CPU group of the browsers' driver
    log.close()  # the child holds its own copy
    SERVERS.append(proc)
    return proc, f"http://127.0.0.1:{port}"


def read_log(path: Path) -> list[dict]:
    """The script runs a server from `start_server` timed (an empty list when it logged none)."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    install(sys.argv[1])
    from streamlit.web.cli import main

    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(main())

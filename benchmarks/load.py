"""Load: N Chromium sessions draw and predict on one dashboard server while a training job runs on it.

    python benchmarks/load.py [--sessions 10] [--seconds 120] [--url http://127.0.0.1:PORT] [--json PATH]
Reports errors (exceptions, error boxes, disconnects, crashes, timeouts: must be 0), the predict round trip as the
browser sees it and the rerun's server time (p50/p95), the training job's images/s and the server's RSS; and, as a
reference measured in the same run, the wall time of a bare 20 ms CPU burst beside the server (cpu_probe.py). Without
--url it starts its own `streamlit run dashboard/app.py` on 127.0.0.1 over a fresh temporary run store;
loopback only, bounded by a hard timeout; it stops the job, the browser and its server on any exit.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canvas_visitor import (CHROMIUM, CHROMIUM_ARGS, ERROR_KINDS, OBSERVER_JS, SETUP_MS,  # noqa: E402
                            VIEWPORT, SessionStats, behind, draw_and_predict, driver_behind, failure,
                            open_predict)
from server_timing import (SERVERS, TIMING_LOG, RssSampler, cpu_count, cpu_model,  # noqa: E402, F401 (data_line: tests)
                           cpu_seconds_by_side, data_line, machine_line, on_cores, read_log, split_cores,
                           start_server, stop_server, wait_healthy)
from load_report import TARGET_MS, LoadResult, percentile, table  # noqa: E402
import training_job  # noqa: E402

PROBE_BURST_MS = 20.0  # the reference's CPU burst: about what a predict's script run takes (17-19 ms measured)


def check_server_cores(server_cores: int, url: str | None) -> tuple[set[int] | None, set[int] | None]:
    """(the server's cores, the visitors' cores) for `--server-cores`, or (None, None) without a split; ValueError
    with a sentence when this machine cannot split so, or the server is not one this script starts."""
    if not server_cores:
        return None, None
    if url is not None:
        raise ValueError("--server-cores needs a server this script starts, not --url")
    return split_cores(server_cores)


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, refused unless it points at this machine."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"load.py drives loopback servers only, not {host!r}")
    return url.rstrip("/")


async def _drive(url: str, result: LoadResult, stats: list[SessionStats], errors: list[tuple[str, str]],
                 preset: str | None, timeout_ms: float, executable: Path, args: list[str],
                 log: Callable[[str], None], artifacts: Path | None, server_pid: int | None = None,
                 server_side: set[int] | None = None) -> None:
    """One Chromium: the Train page starts the job while the sessions open (all at once, as a class would), then
    the sessions draw for `result.seconds`, and the job is stopped as they end. Errors outside the sessions go
    to `errors`; a session that cannot open its page counts an error and tries again while the others draw."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(executable), args=args, headless=True)
        train_page = reference = None
        training_started = False
        try:
            async def start_training() -> None:
                nonlocal train_page, training_started
                train_page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
                await train_page.context.add_init_script(OBSERVER_JS)  # for PROBLEMS_JS if it fails
                try:
                    await training_job.start_training(train_page, url, preset)
                    training_started = True
                    log("training running")
                except Exception as error:  # noqa: BLE001
                    errors.extend(await failure(error, "starting the training job", train_page))

            async def open_session(i: int, context):
                try:
                    return await open_predict(context, url, SETUP_MS)
                except Exception as error:  # noqa: BLE001
                    stats[i].errors.extend(await failure(error, f"session {i}: opening the page",
                                                          context.pages[-1] if context.pages else None))
                    return None

            if preset:
                log(f"starting a training job ({preset} preset) on the Train page")
            log(f"opening {len(stats)} sessions on Draw & predict")
            contexts = [await browser.new_context(viewport=VIEWPORT) for _ in stats]
            for context in contexts:
                await context.add_init_script(OBSERVER_JS)
            pages = await asyncio.gather(*(open_session(i, c) for i, c in enumerate(contexts)),
                                         *([start_training()] if preset else []))
            log(f"{sum(p is not None for p in pages[:len(stats)])} of {len(stats)} sessions open")
            if training_started:
                try:
                    result.train_step_start = await training_job.training_step(train_page, SETUP_MS)
                except Exception as error:  # noqa: BLE001
                    errors.extend(await failure(error, "reading the training step", train_page))
            stop_at = time.monotonic() + result.seconds
            log(f"drawing for {result.seconds:g} s")
            reference = start_probe(result.seconds, server_side)
            cpu_before, window_start = cpu_seconds_by_side(server_pid, reference.pid), time.monotonic()

            async def stop_training_when_due() -> None:  # as the drawing ends, while the last predicts finish
                await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
                log("stopping the training job")
                try:
                    await training_job.stop_training(train_page, result)
                    log("training stopped")
                except Exception as error:  # noqa: BLE001
                    errors.extend(await failure(error, "stopping the training job", train_page))

            await asyncio.gather(*(draw_and_predict(c, url, p, i, stop_at, s, timeout_ms, artifacts)
                                   for i, (c, p, s) in enumerate(zip(contexts, pages, stats))),
                                 *([stop_training_when_due()] if training_started else []))
            window = time.monotonic() - window_start
            result.cpu_cores = {side: round((used - cpu_before[side]) / window, 2)
                                for side, used in cpu_seconds_by_side(server_pid, reference.pid).items()}
            read_probe(reference, result)
        finally:
            if reference is not None and reference.poll() is None:  # the drawing was cut short: so is the probe
                reference.kill()
                reference.wait()
            if training_started and not result.train_stopped:  # never leave a job running on --url servers
                try:
                    await train_page.get_by_role("button", name=re.compile("^Stop")).click(timeout=30_000)
                except Exception:  # noqa: BLE001
                    pass
            await browser.close()


def start_probe(seconds: float, cores: set[int] | None = None) -> subprocess.Popen:
    """benchmarks/cpu_probe.py for `seconds`, in a session of its own at this script's priority and on the server's
    `cores`, as the server runs (server_timing.start_server): the scheduler's share for a bare CPU burst, measured
    beside the server's."""
    with on_cores(cores):
        probe = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cpu_probe.py")), "--seconds",
                                  str(seconds), "--burst-ms", str(PROBE_BURST_MS)], stdout=subprocess.PIPE, text=True,
                                 start_new_session=True)
    SERVERS.append(probe)  # the watchdog's last resort kills it too
    return probe


def read_probe(probe: subprocess.Popen, result: LoadResult) -> None:
    """The probe's bursts into `result` (nothing when it failed: the report says 'not measured')."""
    try:
        out, _ = probe.communicate(timeout=30)
        found = json.loads(out)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        probe.kill()
        probe.wait()
        return
    result.probe_burst_ms, result.probe_bursts = found["burst_ms"], found["bursts"]
    result.probe_wall_p50_ms, result.probe_wall_p95_ms = (percentile(found["wall_ms"], 50),
                                                          percentile(found["wall_ms"], 95))
    result.probe_runqueue_p50_ms, result.probe_runqueue_p95_ms = (percentile(found["runqueue_ms"], 50),
                                                                  percentile(found["runqueue_ms"], 95))


# -- the run -------------------------------------------------------------------------------------------------------
def run_load(sessions: int = 10, seconds: float = 120, url: str | None = None, preset: str | None = "fast",
             timeout_s: float | None = None, verdict_timeout_s: float = 30, server_pid: int | None = None,
             chromium: Path = CHROMIUM, chromium_args: list[str] | None = None, artifacts: Path | None = None,
             browsers_nice: int = 0, server_cores: int = 0, log: Callable[[str], None] = print) -> LoadResult:
    """Run the load and return its figures; `preset=None` runs no training job. Bounded by `timeout_s`.

    `artifacts`: a folder for a screenshot of each session's page when it meets an error. `browsers_nice` > 0: run
    Chromium and Playwright's driver at that nice (`canvas_visitor.behind`, `driver_behind`), behind the server as a
    class's browsers on their own laptops would be; at 0 they share the cores with the server evenly. (The training
    job's worker runs at nice 10.) `server_cores` > 0: the server, its training job and the reference on that many of
    this machine's cores, the browsers, Playwright's driver and this script on the others, as if the visitors were on
    machines of their own (`split_cores`; not with `url`, a server this script did not start)."""
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
    timeout_s = timeout_s or seconds + 480
    began = time.monotonic()
    say = log
    log = lambda message: say(f"[{time.monotonic() - began:5.1f} s] {message}")  # noqa: E731
    result = LoadResult(sessions=sessions, seconds=seconds, cpu_count=cpu_count(), cpu_model=cpu_model(),
                        load_average_start=os.getloadavg()[0], train_preset=preset or "",
                        browsers_nice=browsers_nice)
    server_side, visitors_side = check_server_cores(server_cores, url)
    cores_were = None
    if server_side:
        result.server_cores, result.visitor_cores = sorted(server_side), sorted(visitors_side)
        cores_were = os.sched_getaffinity(0)
    stats = [SessionStats() for _ in range(sessions)]
    home = proc = sampler = None
    timing: list[dict] = []
    errors: list[tuple[str, str]] = []  # (kind, what happened) outside the sessions' own loops
    launchers = Path(tempfile.mkdtemp(prefix="digit-lab-load-browser-"))
    driver_was = os.environ.get("PLAYWRIGHT_NODEJS_PATH")
    if browsers_nice:
        chromium = behind(chromium, launchers, browsers_nice)
        os.environ["PLAYWRIGHT_NODEJS_PATH"] = str(driver_behind(launchers, browsers_nice))
    try:
        if server_side:  # this thread, and so the driver's thread, Playwright's driver and its browsers
            os.sched_setaffinity(0, visitors_side)
        if url is None:
            home = Path(tempfile.mkdtemp(prefix="digit-lab-load-"))
            proc, url = start_server(home, server_side)
            server_pid = proc.pid
            log(f"server {url} (pid {proc.pid}, run store {home})")
        url = check_loopback(url)
        wait_healthy(url, min(90, timeout_s), proc)
        if server_pid:
            sampler = RssSampler(server_pid)
            sampler.start()

        def drive() -> None:  # its own thread and event loop: safe beside a sync Playwright (pytest-playwright)
            try:
                asyncio.run(asyncio.wait_for(_drive(url, result, stats, errors, preset, verdict_timeout_s * 1000,
                                                    chromium, chromium_args or CHROMIUM_ARGS, log, artifacts,
                                                    server_pid, server_side),
                                             timeout_s - (time.monotonic() - began)))
            except asyncio.TimeoutError:
                errors.append(("timeout", f"hard timeout: stopped after {timeout_s:.0f} s"))
            except Exception as error:  # noqa: BLE001
                errors.append(("other", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"))

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        driver.join(timeout=timeout_s + 30)
        if driver.is_alive():
            errors.append(("timeout", f"hard timeout: the browser did not close within {timeout_s + 30:.0f} s"))
    except Exception as error:  # noqa: BLE001
        errors.append(("other", f"{type(error).__name__}: {error}"))
    finally:
        if cores_were is not None:  # a caller (the tests) gets its cores back; the cleanup below runs whatever
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cores_were)
        if sampler is not None:
            sampler.stop()
        if proc is not None:
            stop_server(proc)
            log("server stopped")
            server_log = (home / "server.log").read_text()
            if artifacts is not None:
                (artifacts / "load-server.log").write_text(server_log)
            if errors or any(s.errors for s in stats):
                log("server log (tail):\n" + server_log[-2000:])
        if home is not None:
            timing = read_log(home / TIMING_LOG)
            if artifacts is not None:
                (artifacts / "load-timing.json").write_text(json.dumps(timing))
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(launchers, ignore_errors=True)
        if driver_was is not None:  # the driver has ended with the browser: later Playwright users get theirs back
            os.environ["PLAYWRIGHT_NODEJS_PATH"] = driver_was
        else:
            os.environ.pop("PLAYWRIGHT_NODEJS_PATH", None)

    errors = [e for s in stats for e in s.errors] + errors
    round_trips = [t for s in stats for t in s.round_trip_ms]
    reruns = [t for s in stats for t in s.rerun_ms]
    result.predicts = sum(s.predicts for s in stats)
    result.predicts_per_session = [s.predicts for s in stats]
    result.read_as_drawn = sum(s.read_as_drawn for s in stats)
    result.redrawn = sum(s.redrawn for s in stats)
    result.errors, result.error_samples = len(errors), [f"{kind}: {detail}" for kind, detail in errors[:20]]
    result.error_kinds = {kind: n for kind in ERROR_KINDS if (n := sum(k == kind for k, _ in errors))}
    result.round_trip_p50_ms, result.round_trip_p95_ms = percentile(round_trips, 50), percentile(round_trips, 95)
    result.rerun_p50_ms, result.rerun_p95_ms = percentile(reruns, 50), percentile(reruns, 95)
    result.rerun_samples = len(reruns)
    servers = [t for s in stats for t in s.server_ms]
    result.server_p50_ms, result.server_p95_ms = percentile(servers, 50), percentile(servers, 95)
    if timing:
        predicts = [r for r in timing if r["predicted"]]
        waits = [1000 * (r["end"] - r["received"]) for r in predicts]
        runs = [1000 * (r["end"] - r["start"]) for r in predicts]
        result.predict_server_p50_ms, result.predict_server_p95_ms = percentile(waits, 50), percentile(waits, 95)
        result.predict_script_p50_ms, result.predict_script_p95_ms = percentile(runs, 50), percentile(runs, 95)
        result.predict_server_samples = len(predicts)
        result.predict_cpu_p50_ms = percentile([1000 * r["cpu"] for r in predicts if "cpu" in r], 50)
        waited = [1000 * r["runqueue"] for r in predicts if "runqueue" in r]
        result.predict_runqueue_p50_ms, result.predict_runqueue_p95_ms = percentile(waited, 50), percentile(waited, 95)
    if sampler is not None and sampler.samples:
        result.server_rss_start_mb = sampler.samples[0]
        result.server_rss_peak_mb = max(sampler.samples)
        result.server_rss_final_mb = sampler.samples[-1]
    result.load_average_end = os.getloadavg()[0]
    result.wall_seconds = time.monotonic() - began
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions drawing at once")
    parser.add_argument("--seconds", type=float, default=120, help="how long they draw")
    parser.add_argument("--url", help="a running server on this machine (default: start one)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its RSS")
    parser.add_argument("--preset", default="fast", help=f"the training job's preset, set to "
                        f"{training_job.JOB_EPOCHS} epochs so that it runs until the drawing ends; 'none' for no job")
    parser.add_argument("--verdict-timeout", type=float, default=30, help="seconds a verdict may take")
    parser.add_argument("--timeout", type=float, help="hard limit for the whole run (default seconds + 480)")
    parser.add_argument("--browsers-nice", type=int, default=0, metavar="N",
                        help="run the browsers and Playwright's driver at nice N (1-19; their whole sessions too), "
                             "unable to raise it, as if on the visitors' own machines (default 0: at the server's "
                             "priority)")
    parser.add_argument("--server-cores", type=int, default=0, metavar="N",
                        help="run the server, its training job and the reference on N of the cores, the browsers, "
                             "Playwright's driver and this script on the others, as if the visitors were on machines "
                             "of their own (default 0: everything shares every core)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--artifacts", type=Path, help="a folder for screenshots of pages that met an error")
    args = parser.parse_args(argv)
    try:
        check_server_cores(args.server_cores, args.url)
    except ValueError as error:
        parser.error(str(error))
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    timeout_s = args.timeout or args.seconds + 480
    # A backstop beyond the run's own limit: a wedged browser or driver cannot keep this script alive.
    def give_up() -> None:
        for proc in SERVERS:
            proc.kill()
        os._exit(3)

    watchdog = threading.Timer(timeout_s + 90, give_up)
    watchdog.daemon = True
    watchdog.start()
    print(machine_line(), flush=True)
    result = run_load(args.sessions, args.seconds, args.url, None if args.preset == "none" else args.preset,
                      timeout_s, args.verdict_timeout, args.server_pid, artifacts=args.artifacts,
                      browsers_nice=args.browsers_nice, server_cores=args.server_cores,
                      log=lambda m: print(m, flush=True))
    print(table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**asdict(result), "target_ms": TARGET_MS, "target_met": result.target_met},
                                        indent=2) + "\n")
    watchdog.cancel()
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())

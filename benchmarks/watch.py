"""Watching a run live: what it costs the training, measured in Chromium on the same machine.

    python benchmarks/watch.py [--rounds 2] [--json benchmarks/results/watch.json]
A fresh `streamlit run dashboard/app.py` as shipped (training in its own process). Each round starts `fast` (the
Train page's preset on a first visit) twice from the Train page in Chromium at 1366×768, as a teacher would: once
**watched** (the page stays open on the live progress and curves until the run ends) and once **unwatched** (the
tab is closed as soon as the run shows as running; the script then waits for the run in the run store). The order alternates between rounds, so drift in the
machine's speed falls on both. The figure is each run's own record of images per second (the training loop's
images over its wall time); the browser's and the server's CPU seconds during the run say where the difference
went. Target (issue 11): watched >= 0.85x unwatched. Prints a markdown table; exits 1 only if a run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from canvas_visitor import CHROMIUM, CHROMIUM_ARGS, READY, VIEWPORT  # noqa: E402
from load import PROGRESS  # noqa: E402
from server_timing import cpu_count, cpu_model, machine_line, start_server, stop_server, wait_healthy  # noqa: E402

from core.runs import RunStore  # noqa: E402

TARGET = 0.85
FINISHED = ("completed", "failed", "diverged", "cancelled", "interrupted")


def cpu_seconds(match) -> dict[int, float]:
    """User + system CPU seconds of each live process whose command line satisfies `match`, by process id."""
    tick, seconds = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if match(entry, cmdline):
            seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two `cpu_seconds` readings by the processes alive at the second."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def one_run(browser, url: str, store: RunStore, watched: bool, server_pid: int, timeout_s: float) -> dict:
    known = {r.id for r in store.list()}
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(f"{url}/train")
    page.wait_for_selector(READY, timeout=120_000)
    page.get_by_role("button", name=re.compile("Start training")).click()
    page.get_by_text(PROGRESS).wait_for(timeout=120_000)
    run_id = next(r.id for r in store.list() if r.id not in known)
    browser_cpu = lambda: cpu_seconds(lambda _e, cmd: "chromium" in cmd)  # noqa: E731
    server_cpu = lambda: cpu_seconds(lambda e, _cmd: e.name == str(server_pid))  # noqa: E731
    if not watched:
        page.close()
    cpu0, server0, started = browser_cpu(), server_cpu(), time.monotonic()
    while store.get(run_id).status not in FINISHED:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"run {run_id} did not finish within {timeout_s:.0f} s")
        if watched:
            page.wait_for_timeout(500)  # the page keeps polling and redrawing, as a visitor's would
        else:
            time.sleep(0.5)
    elapsed = time.monotonic() - started
    row = {"watched": watched, "run_id": run_id, "status": store.get(run_id).status,
           "images_per_second": store.get(run_id).timings.get("images_per_second"),
           "browser_cpu_per_s": round(cpu_spent(cpu0, browser_cpu()) / elapsed, 3),
           "server_cpu_per_s": round(cpu_spent(server0, server_cpu()) / elapsed, 3), "seconds": round(elapsed, 1)}
    if watched:
        page.close()
    print(f"{'watched  ' if watched else 'unwatched'}: {row['images_per_second'] or 0:,.0f} images/s "
          f"({row['status']}); browser {row['browser_cpu_per_s']:.2f} cores, server {row['server_cpu_per_s']:.2f}",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (watched + unwatched)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    print(machine_line(), flush=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="digit-lab-watch-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            wait_healthy(url, 180, proc)
            store = RunStore(tmp)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
                print("warm-up run (not counted): the server's first pages and its warm-up", flush=True)
                one_run(browser, url, store, False, proc.pid, args.timeout)
                for i in range(args.rounds):
                    for watched in ((True, False) if i % 2 == 0 else (False, True)):
                        rows.append(one_run(browser, url, store, watched, proc.pid, args.timeout))
                browser.close()
        finally:
            stop_server(proc)
    speed = {w: statistics.median(r["images_per_second"] or 0 for r in rows if r["watched"] is w) for w in (True, False)}
    ratio = speed[True] / speed[False] if speed[False] else 0.0
    cpu = {w: statistics.median(r["browser_cpu_per_s"] for r in rows if r["watched"] is w) for w in (True, False)}
    print("\n| the Train page during the run | images/s (median) | browser CPU | server CPU |\n|---|---|---|---|")
    for w, label in ((True, "open (watched)"), (False, "closed (unwatched)")):
        server = statistics.median(r["server_cpu_per_s"] for r in rows if r["watched"] is w)
        print(f"| {label} | {speed[w]:,.0f} | {cpu[w]:.2f} cores | {server:.2f} cores |")
    print(f"\nWatched / unwatched: **{ratio:.2f}×** (target ≥ {TARGET}×: {'met' if ratio >= TARGET else 'NOT met'}).")
    if args.json:
        args.json.write_text(json.dumps({"cpu_count": cpu_count(), "cpu_model": cpu_model(), "runs": rows,
                                         "ratio": round(ratio, 3), "target": TARGET}, indent=2) + "\n")
    return 1 if any(r["status"] != "completed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

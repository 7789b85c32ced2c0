"""First visits and memory: how long each page takes to appear on a fresh server, and what the server then holds.

    python benchmarks/pages.py [--json benchmarks/results/pages.json] [--presets seed-mlp seed-cnn ...] [--steps 30]
A fresh `streamlit run dashboard/app.py` (over an empty run store, MNIST from DIGIT_LAB_DATA) is visited page by
page by one Chromium at 1366×768, as a teacher opening the app would: for each page the time from the click to
the page drawn (the script finished and nothing left running; a page that shows a heavy part's progress counts
as drawn, and its "complete" time is when the progress bar has given way to the result), the server's own time
for that first run
(benchmarks/server_timing.py), and the server's RSS after it. Then each preset's training process, run for
--steps steps plus its test evaluation through `digit-lab train`, for its peak RSS (the training process owns
the data, the model and the optimiser; the server does not). Targets (issue 11): Home, Evaluate and Explain
each <= 3 s on their first visit, the server <= 1.5 GB after every page. Prints a markdown table; exits 1 if a
page failed to appear, never because a target was missed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canvas_visitor import CHROMIUM, CHROMIUM_ARGS, READY, VIEWPORT  # noqa: E402
from server_timing import (REPO, TIMING_LOG, cpu_count, cpu_model, machine_line, read_log, rss_mb,  # noqa: E402
                           start_server, stop_server, wait_healthy)

# Page title (as in the navigation), URL path, and what shows once its first render is complete.
PAGES = [("Home", "", "Digit Lab"), ("Train", "train", "Start training"), ("Runs & compare", "runs", "Runs"),
         ("Invest", "invest", "Invest"), ("Draw & predict", "predict", "Draw & predict"),
         ("Drawings", "drawings", "Drawings"), ("Evaluate", "evaluate", "Evaluate"),
         ("Explain", "explain", "Explain"), ("Robustness & privacy", "robustness", "Robustness"),
         ("Under the hood", "under-the-hood", "Under the hood")]
TARGET_S = {"Home": 3.0, "Evaluate": 3.0, "Explain": 3.0}
TARGET_RSS_MB = 1500.0
PAGE_TIMEOUT_MS = 180_000
# Done: the script has finished and no spinner, skeleton or "running" status is left on the page.
SETTLED_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector("[data-testid='stSpinner'], [data-testid='stSkeleton'], [data-testid='stStatusWidgetRunningIcon']");
}"""
PROGRESS = "[data-testid='stProgress']"  # a page drawn with its heavy part still computing (Evaluate, first visit)
COMPLETE_JS = SETTLED_JS.replace("[data-testid='stSpinner'],", f"{PROGRESS}, [data-testid='stSpinner'],")


def visit_pages(url: str, server_pid: int, timing_log: Path) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        for title, path, marker in PAGES:
            runs_before = len(read_log(timing_log))
            started = time.monotonic()
            error = None
            try:
                page.goto(f"{url}/{path}", timeout=PAGE_TIMEOUT_MS)
                page.wait_for_selector(READY, timeout=PAGE_TIMEOUT_MS)
                page.get_by_text(re.compile(re.escape(marker))).first.wait_for(timeout=PAGE_TIMEOUT_MS)
                page.wait_for_function(SETTLED_JS, polling=50, timeout=PAGE_TIMEOUT_MS)
            except Exception as exc:  # noqa: BLE001 - reported in the table, the other pages still run
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            seconds = time.monotonic() - started
            if error is None and page.locator(PROGRESS).count():  # heavy parts behind progress: until they are done
                try:
                    page.wait_for_function(COMPLETE_JS, polling=50, timeout=PAGE_TIMEOUT_MS)
                except Exception as exc:  # noqa: BLE001
                    error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            complete = time.monotonic() - started
            if page.locator("[data-testid='stException']").count():
                error = error or "an exception box on the page"
            runs = read_log(timing_log)[runs_before:]
            rows.append({"page": title, "seconds": round(seconds, 2), "complete_seconds": round(complete, 2),
                         "server_seconds": round(max((r["end"] - r["start"] for r in runs), default=0.0), 2),
                         "rss_mb": rss_mb(server_pid), "error": error})
            print(f"{title}: {seconds:.1f} s (complete {complete:.1f} s), server RSS {rows[-1]['rss_mb'] or 0:.0f} MB"
                  + (f" — {error}" if error else ""), flush=True)
        browser.close()
    return rows


# Runs a command and prints its peak RSS (KiB) last: this script's own children include the server, so the
# training process is measured from a parent of its own.
PEAK_OF = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def preset_peak_rss(preset: str, steps: int, home: Path) -> dict:
    """Peak RSS of `digit-lab train --preset P --max-steps N` (its own process: what training itself holds)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", PEAK_OF, sys.executable, "-m", "core.cli", "train", "--preset",
                           preset, "--max-steps", str(steps), "--json"], cwd=REPO,
                          env={**os.environ, "DIGIT_LAB_HOME": str(home)}, capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    peak = int(lines[-1]) if lines and lines[-1].isdigit() else None
    return {"preset": preset, "steps": steps, "peak_rss_mb": round(peak / 1024, 1) if peak else None,
            "seconds": round(time.monotonic() - started, 1), "ok": proc.returncode == 0,
            "error": None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def table(rows: list[dict], presets: list[dict]) -> str:
    lines = ["| page | first visit (address → drawn) | complete (no progress bar left) | server's first run | "
             "server RSS after | target |", "|---|---|---|---|---|---|"]
    for r in rows:
        target = TARGET_S.get(r["page"])
        verdict = "" if target is None else f"≤ {target:g} s: {'met' if r['seconds'] <= target else 'NOT met'}"
        lines.append(f"| {r['page']} | {r['seconds']:.1f} s{' (' + r['error'] + ')' if r['error'] else ''} | "
                     f"{r.get('complete_seconds', r['seconds']):.1f} s | {r['server_seconds']:.1f} s | {r['rss_mb'] or 0:,.0f} MB | {verdict} |")
    peak = max((r["rss_mb"] or 0 for r in rows), default=0)
    lines += ["", f"Server RSS after every page: {peak:,.0f} MB (target ≤ {TARGET_RSS_MB:,.0f} MB: "
                  f"{'met' if peak <= TARGET_RSS_MB else 'NOT met'})."]
    if presets:
        lines += ["", "| preset | training process peak RSS | steps |", "|---|---|---|"]
        lines += [f"| {p['preset']} | {p['peak_rss_mb'] or 0:,.0f} MB{'' if p['ok'] else ' (failed: ' + str(p['error']) + ')'}"
                  f" | {p['steps']} + test evaluation |" for p in presets]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--presets", nargs="*", default=["seed-mlp", "seed-cnn", "fast", "starter", "best", "robust",
                                                          "private"], help="presets whose training RSS to measure")
    parser.add_argument("--steps", type=int, default=30, help="training steps per preset (then its test evaluation)")
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="digit-lab-pages-") as tmp:
        home = Path(tmp)
        proc, url = start_server(home)
        try:
            wait_healthy(url, 90, proc)
            rows = visit_pages(url, proc.pid, home / TIMING_LOG)
        finally:
            stop_server(proc)
        presets = []
        for preset in args.presets:  # one fresh run store each
            presets.append(preset_peak_rss(preset, args.steps, home / f"train-{preset}"))
            print(f"{preset}: peak RSS {presets[-1]['peak_rss_mb']} MB", flush=True)
    print(table(rows, presets))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu_count": cpu_count(), "cpu_model": cpu_model(), "pages": rows,
                                         "presets": presets, "target_seconds": TARGET_S,
                                         "target_rss_mb": TARGET_RSS_MB}, indent=2) + "\n")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

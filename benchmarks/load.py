"""Load: N Chromium sessions draw and predict on one dashboard server while a training job runs on it.

    python benchmarks/load.py [--sessions 10] [--seconds 120] [--url http://127.0.0.1:PORT] [--json PATH]
Reports errors (exceptions, error boxes, disconnects, crashes, timeouts: must be 0), the predict round trip as the
browser sees it and the rerun's server time (p50/p95), the training job's images/s and the server's RSS. Without
--url it starts its own `streamlit run dashboard/app.py` on 127.0.0.1 over a fresh temporary run store;
loopback only, bounded by a hard timeout; it stops the job, the browser and its server on any exit.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("DIGIT_LAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}
READY = "[data-testid='stApp'][data-test-script-state='notRunning']"
CANVAS = "[data-testid=stBidiComponentIsolated] canvas.upper-canvas"
PROGRESS = re.compile(r"running · epoch \d+/\d+ · step (\d+)/")
TARGET_MS = 200.0  # the target for a predict's p95, server time
TIMING_LOG = "timing.jsonl"  # in the run store of a server started here: one line per script run
# A new canvas loads its (empty) drawing asynchronously and cancels pending sends when it does, so a stroke
# made before that is lost; a person pauses about a second after Clear, and so do the sessions here. A stroke
# that still sends nothing within STROKE_SEND_MS is drawn again (counted as `redrawn`, not as an error).
SETTLE_MS = 1000
STROKE_SEND_MS = 5000
SETUP_MS = 180_000  # page loads, starting and stopping the job: a cold or busy server is slow at these
_SERVERS: list[subprocess.Popen] = []  # started here: the watchdog kills them if all else hangs

# Digits as strokes over the canvas (fractions of its width and height): a 1, a 7 (bar, then stem), a 0.
SHAPES = {
    "1": ([(0.5, 0.12), (0.5, 0.88)], 12),
    "7": ([(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)], 12),
    "0": ([(0.5 + 0.22 * math.sin(2 * math.pi * i / 16), 0.5 - 0.33 * math.cos(2 * math.pi * i / 16))
           for i in range(17)], 3),
}

# Installed in every session page before Streamlit loads. Times are the browser's performance.now() (ms):
# the mouse-up; the verdict heading appearing or going (a MutationObserver); and, from the websocket itself,
# each rerun request sent (BackMsg.rerun_script, field 11) and each script start and finish the server reports
# (ForwardMsg.new_session, field 4; script_finished, field 6). Those frames are read as they arrive, so a rerun
# is timed even when the page renders its running and finished states in one go, as it does under load.
OBSERVER_JS = r"""(() => {
  const d = window.__dl = {mouseup: 0, ws: [], running: false, idleAt: 0, conn: null, connLost: 0,
                           verdict: null, verdictAt: 0, verdictGoneAt: 0};
  window.addEventListener('mouseup', () => { d.mouseup = performance.now(); }, true);
  const fields = (buf) => {  // top-level protobuf fields: [number, varint value or null]
    const b = new Uint8Array(buf), out = [];
    let i = 0;
    const varint = () => {
      let v = 0, m = 1, x;
      do { x = b[i++]; v += (x & 127) * m; m *= 128; } while (x & 128 && i < b.length);
      return v;
    };
    while (i < b.length) {
      const tag = varint(), wire = tag % 8, num = Math.floor(tag / 8);
      if (wire === 0) out.push([num, varint()]);
      else if (wire === 2) { const n = varint(); out.push([num, null]); i += n; }
      else if (wire === 1) i += 8; else if (wire === 5) i += 4; else break;
    }
    return out;
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (!(ev.data instanceof ArrayBuffer)) return;
        const now = performance.now();
        for (const [num, value] of fields(ev.data)) {
          if (num === 4) { d.running = true; d.ws.push([now, 'start']); }
          if (num === 6) {  // 0: the page's run, 3: a fragment's (the canvas is one); 2: cut short by a newer rerun
            d.running = false; d.idleAt = now; d.ws.push([now, value === 2 ? 'early' : 'finished']);
          }
        }
      });
    }
    send(data) {
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        const buf = data instanceof ArrayBuffer ? data
                  : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
        if (fields(buf).some(([num]) => num === 11)) d.ws.push([performance.now(), 'request']);
      }
      return super.send(data);
    }
  };
  const VERDICT = /^It's an? |^Not sure/;
  const verdict = () => {
    for (const h of document.querySelectorAll('[data-testid="stMain"] h3')) {
      const t = h.textContent.trim();
      if (VERDICT.test(t)) return t;
    }
    return null;
  };
  const check = () => {
    const now = performance.now();
    const app = document.querySelector('[data-testid="stApp"]');
    if (app) {
      const c = app.getAttribute('data-test-connection-state');
      if (c !== d.conn) { if (d.conn === 'CONNECTED') d.connLost += 1; d.conn = c; }
    }
    const v = verdict();
    if (v !== d.verdict) { d.verdict = v; if (v) d.verdictAt = now; else d.verdictGoneAt = now; }
  };
  new MutationObserver(check).observe(document, {subtree: true, childList: true, characterData: true,
    attributes: true, attributeFilter: ['data-test-connection-state']});
})();"""

# After the mouse-up: the canvas has sent the drawing (a rerun request left the browser).
SENT_JS = """() => { const d = window.__dl;
  return d.mouseup > 0 && d.ws.some(([t, kind]) => kind === 'request' && t > d.mouseup); }"""
# After the mouse-up: the verdict is on screen; then, the server has finished every rerun asked for since.
VERDICT_JS = """() => { const d = window.__dl;
  return d.mouseup > 0 && d.verdict !== null && d.verdictAt > d.mouseup; }"""
FINISHED_JS = """() => { const d = window.__dl; return !d.running && d.idleAt > d.mouseup; }"""
# After Clear: the verdict is gone and no rerun is in progress.
CLEARED_JS = """(t) => { const d = window.__dl; return d.verdict === null && d.verdictGoneAt > t && !d.running; }"""
# The predict's times: mouse-up -> verdict on screen; and on the websocket, the first rerun request after the
# mouse-up -> the first complete script run's finish after it, and that run's own start -> finish.
TIMES_JS = """() => { const d = window.__dl, t0 = d.mouseup; let request = null, start = null, end = null;
  for (const [t, kind] of d.ws) {
    if (t < t0) continue;
    if (kind === 'request' && request === null) request = t;
    else if (kind === 'start' && request !== null) start = t;
    else if (kind === 'finished' && start !== null) { end = t; break; }
  }
  return {round_trip: d.verdictAt - t0, rerun: end !== null ? end - start : null,
          server: end !== null ? end - request : null, verdict: d.verdict}; }"""
# Anything a visitor would see as broken, as [kind, detail] pairs.
PROBLEMS_JS = """() => { const d = window.__dl, found = [];
  const first = (sel) => document.querySelector(sel);
  if (first('[data-testid="stException"]'))
    found.push(['exception', first('[data-testid="stException"]').textContent.trim().slice(0, 160)]);
  if (first('[data-testid="stAlertContentError"]'))
    found.push(['error box', first('[data-testid="stAlertContentError"]').textContent.trim().slice(0, 160)]);
  if ([...document.querySelectorAll('[role="dialog"]')].some(e => /Connection error/i.test(e.textContent)))
    found.push(['disconnected', 'Connection error dialog']);
  if (d.connLost) found.push(['disconnected', `the websocket dropped ${d.connLost}x`]);
  if (d.conn !== null && d.conn !== 'CONNECTED') found.push(['disconnected', `connection state ${d.conn}`]);
  d.connLost = 0; d.ws = d.ws.slice(-20);
  return found; }"""
ERROR_KINDS = ("exception", "error box", "disconnected", "crash", "timeout", "other")  # all count as errors


@dataclass
class SessionStats:
    predicts: int = 0
    read_as_drawn: int = 0
    redrawn: int = 0
    round_trip_ms: list[float] = field(default_factory=list)
    rerun_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (kind, what happened)


@dataclass
class LoadResult:
    sessions: int
    seconds: float
    cpu_count: int
    cpu_model: str
    load_average_start: float
    load_average_end: float = 0.0
    predicts: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    predicts_per_session: list[int] = field(default_factory=list)
    read_as_drawn: int = 0
    redrawn: int = 0
    round_trip_p50_ms: float | None = None  # mouse-up -> verdict on screen, in the browser
    round_trip_p95_ms: float | None = None
    rerun_p50_ms: float | None = None  # the script's start -> finish (websocket frames): server time
    rerun_p95_ms: float | None = None
    server_p50_ms: float | None = None  # the rerun request sent -> the script finished: + the server's queue
    server_p95_ms: float | None = None
    rerun_samples: int = 0
    # From the server's own clock (benchmarks/server_timing.py; only for a server this script starts): the
    # runs that read a drawing, from the rerun request leaving the websocket queue to the script's end.
    predict_server_p50_ms: float | None = None
    predict_server_p95_ms: float | None = None
    predict_script_p50_ms: float | None = None  # the script run alone (start -> end)
    predict_script_p95_ms: float | None = None
    predict_server_samples: int = 0
    train_preset: str = ""
    train_step_start: int | None = None
    train_step_end: int | None = None
    train_images_per_second: float | None = None
    train_stopped: bool = False
    train_stop_seconds: float | None = None
    server_rss_start_mb: float | None = None
    server_rss_peak_mb: float | None = None
    server_rss_final_mb: float | None = None
    wall_seconds: float = 0.0

    @property
    def target_met(self) -> bool | None:
        """The predict's p95 server time against the target: the server's own clock where it was read, else the
        script's start -> finish as the browser saw the frames (which adds the browser's own delays)."""
        p95 = self.predict_server_p95_ms if self.predict_server_p95_ms is not None else self.rerun_p95_ms
        return None if p95 is None else p95 <= TARGET_MS


# -- the machine and the server process ----------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def rss_mb(pid: int) -> float | None:
    """Resident memory of `pid` and all its descendants (from /proc), in MB; None once it is gone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])  # kB
        except OSError:
            if p == pid:
                return None
        todo.extend(children.get(p, []))
    return total / 1024


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


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run dashboard/app.py` on 127.0.0.1 and a free port, over the run store `home`; every script run
    is timed into home/timing.jsonl (benchmarks/server_timing.py)."""
    port = _free_port()
    log = open(home / "server.log", "w")
    env = {**os.environ, "DIGIT_LAB_HOME": str(home), "DIGIT_LAB_WORKER": "process",
           "DIGIT_LAB_SERVER_THREADS": ""}  # the server as shipped, even when run from the tests
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "server_timing.py"), str(home / TIMING_LOG), "run",
         "dashboard/app.py", "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    _SERVERS.append(proc)
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


# -- the browser side --------------------------------------------------------------------------------------------
async def _stroke(page, box: dict, points: list[tuple[float, float]], steps: int) -> None:
    """Press, move through `points` (fractions of the canvas) and release, like a hand would."""
    await page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    await page.mouse.down()
    for fx, fy in points[1:]:
        await page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=steps)
    await page.mouse.up()


async def _open_predict(context, url: str, timeout_ms: float):
    page = await context.new_page()
    await page.goto(f"{url}/predict", timeout=timeout_ms)
    await page.wait_for_selector(READY, timeout=timeout_ms)
    await _ready_canvas(page, timeout_ms)
    return page


async def _ready_canvas(page, timeout_ms: float) -> dict:
    """The canvas's box once one canvas, not the one marked before Clear, has stayed on the page for SETTLE_MS.

    After Clear the page mounts a new canvas component, and under load it may mount it more than once (each
    time with an empty drawing area for a while): a stroke lands only on the one that stays."""
    deadline = time.monotonic() + timeout_ms / 1000
    seen, since = None, 0.0
    while time.monotonic() < deadline:
        handles = await page.locator(CANVAS).element_handles()
        mark = (await handles[0].evaluate("e => e.__dlOld ? null : (e.__dlId = e.__dlId || Math.random())")
                if len(handles) == 1 else None)
        box = None
        if mark is None or mark != seen:
            seen, since = mark, time.monotonic()
        elif time.monotonic() - since >= SETTLE_MS / 1000:
            box = await handles[0].bounding_box()
        for handle in handles:
            await handle.dispose()
        if box:
            return box
        await page.wait_for_timeout(100)
    raise TimeoutError(f"no canvas to draw on for {timeout_ms / 1000:.0f} s")


async def _clear(page, timeout_ms: float) -> None:
    await (await page.locator(CANVAS).element_handle(timeout=timeout_ms)).evaluate("e => { e.__dlOld = true; }")
    t = await page.evaluate("performance.now()")
    await page.locator(".st-key-predict_clear button").click(timeout=timeout_ms)
    await page.wait_for_function(CLEARED_JS, arg=t, polling=50, timeout=timeout_ms)


async def _snapshot(page) -> str:
    """What the page's observer saw last, for an error message."""
    try:
        return " " + json.dumps(await page.evaluate(
            "() => { const d = window.__dl, n = performance.now(); return {now: n, mouseup: d.mouseup, "
            "running: d.running, idleAt: d.idleAt, verdict: d.verdict, verdictAt: d.verdictAt, "
            "goneAt: d.verdictGoneAt, ws: d.ws.slice(-8), "
            "canvas_hosts: document.querySelectorAll('[data-testid=stBidiComponentIsolated]').length, "
            "main: (document.querySelector('[data-testid=stMain]')?.innerText || '').slice(0, 240)}; }"))
    except Exception:  # noqa: BLE001
        return ""


async def _failure(error: Exception, what: str, page=None) -> list[tuple[str, str]]:
    """An exception from `what` as (kind, detail) errors: what the page shows first (an exception, an error
    box, a lost connection), then the timeout or failure itself."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    found = []
    if page is not None:
        try:
            found = [(kind, f"{what}: {detail}") for kind, detail in await page.evaluate(PROBLEMS_JS)]
        except Exception:  # noqa: BLE001 - a closed or crashed page has nothing to add
            pass
    kind = "timeout" if isinstance(error, (TimeoutError, PlaywrightTimeout)) else "other"
    detail = f"{what}: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return [*found, (kind, detail + (await _snapshot(page) if page is not None else ""))]


async def _session(context, url: str, page, index: int, stop_at: float, stats: SessionStats, timeout_ms: float,
                   artifacts: Path | None) -> None:
    """Draw, wait for the verdict, clear; again until `stop_at`. After an error, a fresh page, as a person would
    reload; `page` is None when the first one could not be opened."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    crashed: list[bool] = []

    def watched(new_page):
        crashed.clear()
        new_page.on("crash", lambda _: crashed.append(True))
        return new_page

    page = watched(page) if page is not None else None
    shapes = list(SHAPES)
    i = index  # sessions start on different digits
    while time.monotonic() < stop_at:
        if page is None:
            try:
                page = watched(await _open_predict(context, url, SETUP_MS))
            except Exception as error:  # noqa: BLE001
                stats.errors.extend(await _failure(error, f"session {index}: reopening the page",
                                                   context.pages[-1] if context.pages else None))
                return
        digit = shapes[i % len(shapes)]
        i += 1
        phase = "clearing the canvas"
        try:
            if await page.evaluate("window.__dl.verdict !== null"):
                await _clear(page, timeout_ms)
            if time.monotonic() >= stop_at:
                break
            phase = f"drawing a {digit}"
            for attempt in range(3):
                box = await _ready_canvas(page, timeout_ms)
                await page.evaluate("window.__dl.mouseup = 0")
                points, steps = SHAPES[digit]
                await _stroke(page, box, points, steps)
                try:
                    await page.wait_for_function(SENT_JS, polling=50, timeout=STROKE_SEND_MS)
                    break
                except PlaywrightTimeout:
                    stats.redrawn += 1
            else:
                raise TimeoutError("the canvas sent nothing for three strokes in a row")
            phase = f"waiting for the verdict on a {digit}"
            await page.wait_for_function(VERDICT_JS, polling=50, timeout=timeout_ms)
            phase = f"waiting for the rerun after a {digit} to finish"
            await page.wait_for_function(FINISHED_JS, polling=50, timeout=timeout_ms)
            times = await page.evaluate(TIMES_JS)
            stats.predicts += 1
            stats.round_trip_ms.append(times["round_trip"])
            if times["rerun"] is not None:
                stats.rerun_ms.append(times["rerun"])
                stats.server_ms.append(times["server"])
            if re.match(rf"^It's an? {digit}\b", times["verdict"] or ""):
                stats.read_as_drawn += 1
            problems = [(kind, f"session {index}: {detail}") for kind, detail in await page.evaluate(PROBLEMS_JS)]
        except Exception as error:  # noqa: BLE001 - a timeout, a crash, a closed page: all count
            problems = ([("crash", f"session {index}: the page crashed")] if crashed
                        else await _failure(error, f"session {index}: {phase}", page))
        if problems:
            stats.errors.extend(problems)
            if artifacts is not None:
                try:
                    await page.screenshot(path=str(artifacts / f"load-session{index}-error{len(stats.errors)}.png"),
                                          timeout=10_000)
                except Exception:  # noqa: BLE001
                    pass
            try:
                await page.close()
            except Exception:  # noqa: BLE001
                pass
            page = None


async def _start_training(page, url: str, preset: str) -> None:
    """On the Train page: choose `preset` and press Start; returns once the job shows it is running."""
    await page.goto(f"{url}/train", timeout=SETUP_MS)
    await page.wait_for_selector(READY, timeout=SETUP_MS)
    await _choose_preset(page, preset)
    await page.get_by_role("button", name=re.compile("Start training")).click(timeout=SETUP_MS)
    await page.get_by_text(PROGRESS).wait_for(timeout=SETUP_MS)  # the dataset loads first


async def _choose_preset(page, preset: str) -> None:
    from playwright.async_api import expect

    select = page.get_by_role("combobox", name="Preset")  # Streamlit's select box: an input showing the choice
    if await select.input_value(timeout=SETUP_MS) != preset:
        await select.click(timeout=SETUP_MS)
        await page.get_by_role("option", name=preset, exact=True).click(timeout=SETUP_MS)
        await page.wait_for_timeout(500)
        await page.wait_for_selector(READY, timeout=SETUP_MS)
    await expect(select).to_have_value(preset, timeout=SETUP_MS)


async def _training_step(page, timeout_ms: float) -> int:
    return int(PROGRESS.search(await page.get_by_text(PROGRESS).inner_text(timeout=timeout_ms)).group(1))


async def _stop_training(page, result: LoadResult) -> None:
    """Read the job's step and images/s, press Stop, and wait until the page says it stopped."""
    result.train_step_end = await _training_step(page, SETUP_MS)
    value = await page.locator("[data-testid='stMetric']", has_text="Images/s").locator(
        "[data-testid='stMetricValue']").inner_text(timeout=SETUP_MS)
    result.train_images_per_second = float(value.replace(",", "")) if value.strip() not in ("", "–") else None
    await page.get_by_role("button", name=re.compile("^Stop")).click(timeout=SETUP_MS)
    clicked = time.monotonic()
    await page.get_by_text(re.compile("Stopped. Resume continues")).wait_for(timeout=SETUP_MS)
    result.train_stopped = True
    result.train_stop_seconds = time.monotonic() - clicked  # the job stops within a batch, then the page shows it


async def _drive(url: str, result: LoadResult, stats: list[SessionStats], errors: list[tuple[str, str]],
                 preset: str | None, timeout_ms: float, executable: Path, args: list[str],
                 log: Callable[[str], None], artifacts: Path | None) -> None:
    """One Chromium: the Train page starts the job while the sessions open (all at once, as a class would), then
    the sessions draw for `result.seconds`, and the job is stopped as they end. Errors outside the sessions go
    to `errors`; a session that cannot open its page counts an error and tries again while the others draw."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(executable), args=args, headless=True)
        train_page = None
        training_started = False
        try:
            async def start_training() -> None:
                nonlocal train_page, training_started
                train_page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
                await train_page.context.add_init_script(OBSERVER_JS)  # for PROBLEMS_JS if it fails
                try:
                    await _start_training(train_page, url, preset)
                    training_started = True
                    log("training running")
                except Exception as error:  # noqa: BLE001
                    errors.extend(await _failure(error, "starting the training job", train_page))

            async def open_session(i: int, context):
                try:
                    return await _open_predict(context, url, SETUP_MS)
                except Exception as error:  # noqa: BLE001
                    stats[i].errors.extend(await _failure(error, f"session {i}: opening the page",
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
                    result.train_step_start = await _training_step(train_page, SETUP_MS)
                except Exception as error:  # noqa: BLE001
                    errors.extend(await _failure(error, "reading the training step", train_page))
            stop_at = time.monotonic() + result.seconds
            log(f"drawing for {result.seconds:g} s")

            async def stop_training_when_due() -> None:  # as the drawing ends, while the last predicts finish
                await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
                log("stopping the training job")
                try:
                    await _stop_training(train_page, result)
                    log("training stopped")
                except Exception as error:  # noqa: BLE001
                    errors.extend(await _failure(error, "stopping the training job", train_page))

            await asyncio.gather(*(_session(c, url, p, i, stop_at, s, timeout_ms, artifacts)
                                   for i, (c, p, s) in enumerate(zip(contexts, pages, stats))),
                                 *([stop_training_when_due()] if training_started else []))
        finally:
            if training_started and not result.train_stopped:  # never leave a job running on --url servers
                try:
                    await train_page.get_by_role("button", name=re.compile("^Stop")).click(timeout=30_000)
                except Exception:  # noqa: BLE001
                    pass
            await browser.close()


# -- the run -------------------------------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100  # linear interpolation, as numpy.percentile
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_load(sessions: int = 10, seconds: float = 120, url: str | None = None, preset: str | None = "fast",
             timeout_s: float | None = None, verdict_timeout_s: float = 30, server_pid: int | None = None,
             chromium: Path = CHROMIUM, chromium_args: list[str] | None = None, artifacts: Path | None = None,
             log: Callable[[str], None] = print) -> LoadResult:
    """Run the load and return its figures; `preset=None` runs no training job. Bounded by `timeout_s`.

    `artifacts`: a folder for a screenshot of each session's page when it meets an error."""
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
    timeout_s = timeout_s or seconds + 480
    began = time.monotonic()
    say = log
    log = lambda message: say(f"[{time.monotonic() - began:5.1f} s] {message}")  # noqa: E731
    result = LoadResult(sessions=sessions, seconds=seconds, cpu_count=cpu_count(), cpu_model=cpu_model(),
                        load_average_start=os.getloadavg()[0], train_preset=preset or "")
    stats = [SessionStats() for _ in range(sessions)]
    home = proc = sampler = None
    timing: list[dict] = []
    errors: list[tuple[str, str]] = []  # (kind, what happened) outside the sessions' own loops
    try:
        if url is None:
            home = Path(tempfile.mkdtemp(prefix="digit-lab-load-"))
            proc, url = start_server(home)
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
                                                    chromium, chromium_args or CHROMIUM_ARGS, log, artifacts),
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
            shutil.rmtree(home, ignore_errors=True)

    errors = [e for s in stats for e in s.errors] + errors
    round_trips = [t for s in stats for t in s.round_trip_ms]
    reruns = [t for s in stats for t in s.rerun_ms]
    result.predicts = sum(s.predicts for s in stats)
    result.predicts_per_session = [s.predicts for s in stats]
    result.read_as_drawn = sum(s.read_as_drawn for s in stats)
    result.redrawn = sum(s.redrawn for s in stats)
    result.errors, result.error_samples = len(errors), [f"{kind}: {detail}" for kind, detail in errors[:20]]
    result.error_kinds = {kind: n for kind in ERROR_KINDS if (n := sum(k == kind for k, _ in errors))}
    result.round_trip_p50_ms, result.round_trip_p95_ms = _percentile(round_trips, 50), _percentile(round_trips, 95)
    result.rerun_p50_ms, result.rerun_p95_ms = _percentile(reruns, 50), _percentile(reruns, 95)
    result.rerun_samples = len(reruns)
    servers = [t for s in stats for t in s.server_ms]
    result.server_p50_ms, result.server_p95_ms = _percentile(servers, 50), _percentile(servers, 95)
    if timing:
        predicts = [r for r in timing if r["predicted"]]
        waits = [1000 * (r["end"] - r["received"]) for r in predicts]
        runs = [1000 * (r["end"] - r["start"]) for r in predicts]
        result.predict_server_p50_ms, result.predict_server_p95_ms = _percentile(waits, 50), _percentile(waits, 95)
        result.predict_script_p50_ms, result.predict_script_p95_ms = _percentile(runs, 50), _percentile(runs, 95)
        result.predict_server_samples = len(predicts)
    if sampler is not None and sampler.samples:
        result.server_rss_start_mb = sampler.samples[0]
        result.server_rss_peak_mb = max(sampler.samples)
        result.server_rss_final_mb = sampler.samples[-1]
    result.load_average_end = os.getloadavg()[0]
    result.wall_seconds = time.monotonic() - began
    return result


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table(r: LoadResult) -> str:
    """The figures as a markdown table, with what each column measures underneath."""
    target = {None: "n/a", True: "PASS", False: "FAIL"}[r.target_met]
    steps = (f"{r.train_step_start}→{r.train_step_end}" if r.train_step_end is not None
             else str(r.train_step_start or "–"))
    rows = [
        "| sessions | seconds | predicts | errors | server time p50 / p95 (script alone) | round trip p50 / p95 | "
        "frames: rerun p50 / p95 | frames: request → finished p50 / p95 | training images/s (steps) | "
        "server RSS peak / final |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r.sessions} | {r.seconds:g} | {r.predicts} | {r.errors} | {_fmt(r.predict_server_p50_ms)} / "
        f"{_fmt(r.predict_server_p95_ms)} ms ({_fmt(r.predict_script_p50_ms)} / {_fmt(r.predict_script_p95_ms)}) | "
        f"{_fmt(r.round_trip_p50_ms)} / {_fmt(r.round_trip_p95_ms)} ms | {_fmt(r.rerun_p50_ms)} / "
        f"{_fmt(r.rerun_p95_ms)} ms | {_fmt(r.server_p50_ms)} / {_fmt(r.server_p95_ms)} ms | "
        f"{_fmt(r.train_images_per_second)} ({steps}) | {_fmt(r.server_rss_peak_mb)} / "
        f"{_fmt(r.server_rss_final_mb)} MB |",
        "",
        f"machine: {r.cpu_count} CPU cores ({r.cpu_model}); load average {r.load_average_start:.1f} at the start, "
        f"{r.load_average_end:.1f} at the end (other jobs may share the cores; "
        "the browsers run on them too)",
        f"server time: on the server's own clock, for each script run that read a drawing "
        f"({r.predict_server_samples} runs): the rerun request taken off the websocket -> the script's end "
        "(queueing + the run); in brackets the script run alone",
        "round trip (browser): mouse-up on the canvas -> the verdict on screen (canvas encoding, websocket, "
        "queueing, the rerun, rendering)",
        f"frames: the script's start -> finish frames (and the rerun request sent -> the finish frame) as the browser "
        f"receives them on loopback, so they add the browser's own delays ({r.rerun_samples} samples)",
        f"target: predict server time p95 <= {TARGET_MS:.0f} ms: {target} (reported, not enforced)",
        f"predicts per session: {r.predicts_per_session}; read as the digit drawn: {r.read_as_drawn} of {r.predicts}; "
        f"strokes drawn again because a fresh canvas missed them: {r.redrawn}",
        f"training job ({r.train_preset or 'none'}): "
        + (f"stopped, {r.train_stop_seconds:.0f} s from the click to the page saying so" if r.train_stopped
           else "NOT stopped")
        + f"; server RSS at the start {_fmt(r.server_rss_start_mb)} MB; wall {r.wall_seconds:.0f} s",
    ]
    if r.errors:
        rows.append("errors by kind: " + ", ".join(f"{kind} {n}" for kind, n in r.error_kinds.items())
                    + " (timeout: nothing within the verdict timeout; every kind counts)")
        rows.append("errors:\n  " + "\n  ".join(r.error_samples))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="browser sessions drawing at once")
    parser.add_argument("--seconds", type=float, default=120, help="how long they draw")
    parser.add_argument("--url", help="a running server on this machine (default: start one)")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its RSS")
    parser.add_argument("--preset", default="fast", help="the training job's preset; 'none' for no job")
    parser.add_argument("--verdict-timeout", type=float, default=30, help="seconds a verdict may take")
    parser.add_argument("--timeout", type=float, help="hard limit for the whole run (default seconds + 480)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--artifacts", type=Path, help="a folder for screenshots of pages that met an error")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    timeout_s = args.timeout or args.seconds + 480
    # A backstop beyond the run's own limit: a wedged browser or driver cannot keep this script alive.
    def give_up() -> None:
        for proc in _SERVERS:
            proc.kill()
        os._exit(3)

    watchdog = threading.Timer(timeout_s + 90, give_up)
    watchdog.daemon = True
    watchdog.start()
    print(f"{cpu_count()} CPU cores ({cpu_model()}), load average {os.getloadavg()[0]:.1f}", flush=True)
    result = run_load(args.sessions, args.seconds, args.url, None if args.preset == "none" else args.preset,
                      timeout_s, args.verdict_timeout, args.server_pid, artifacts=args.artifacts,

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

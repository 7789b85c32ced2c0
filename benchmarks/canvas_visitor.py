"""One visitor of the Draw & predict page in Chromium, drawing digits and reading the answers, as benchmarks/load.py
runs many of at once: the in-page observer that times each rerun from the websocket's own frames, and the loop that
draws, waits for the verdict, notes the times and clears. Problems are recorded as (kind, what happened), never
raised: a session goes on after one.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path(os.environ.get("DIGIT_LAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}


def behind(chromium: Path, folder: Path, nice: int = 19) -> Path:
    """A launcher in `folder` that runs `chromium` as if it were on another machine, so the server and its training
    job come first on the cores they share with the browsers. Playwright starts the browser in a session of its own,
    and Linux shares the CPU between sessions before it looks at nice values (autogroups: with them on, a browser
    at nice 19 still took half the cores); so the launcher lowers its session's group to nice 19, then runs
    Chromium at nice 19 without the right to raise it (as root, Chromium raises its main processes to -8)."""
    return _launcher(folder / "chromium-behind", str(chromium), nice, own_session=False)


def driver_behind(folder: Path, nice: int) -> Path:
    """A launcher in `folder` for Playwright's driver (Node.js; `PLAYWRIGHT_NODEJS_PATH` names it) that puts it
    behind the server too: it relays every visitor's clicks and mouse moves, work a class's own laptops would do.
    It runs in a session of its own (leaving the benchmark's, which may be the terminal that started it) whose
    group is lowered to `nice`."""
    from playwright._impl._driver import compute_driver_executable

    node = os.environ.get("PLAYWRIGHT_NODEJS_PATH") or compute_driver_executable()[0]
    return _launcher(folder / "driver-behind", node, nice, own_session=True)


def _launcher(path: Path, program: str, nice: int, own_session: bool) -> Path:
    """A shell script at `path` that runs `program` with its arguments at `nice`, its session's CPU group lowered
    to `nice` too, unable to raise either; `own_session`: in a new session first (not for a browser Playwright
    already starts in one)."""
    path.write_text(f"#!/bin/sh\nexec {'setsid ' if own_session else ''}sh -c '"
                    f"(echo {nice} > /proc/self/autogroup) 2>/dev/null; exec nice -n {nice} "
                    f"setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice \"$0\" \"$@\"' '{program}' \"$@\"\n")
    path.chmod(0o755)
    return path


READY = "[data-testid='stApp'][data-test-script-state='notRunning']"
CANVAS = "[data-testid=stBidiComponentIsolated] canvas.upper-canvas"
# A new canvas loads its (empty) drawing asynchronously and cancels pending sends when it does, so a stroke
# made before that is lost; a person pauses about a second after Clear, and so do the sessions here. A stroke
# that still sends nothing within STROKE_SEND_MS is drawn again (counted as `redrawn`, not as an error).
SETTLE_MS = 1000
STROKE_SEND_MS = 5000
SETUP_MS = 180_000  # page loads, starting and stopping the job: a cold or busy server is slow at these

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


# -- the session --------------------------------------------------------------------------------------------
async def _stroke(page, box: dict, points: list[tuple[float, float]], steps: int) -> None:
    """Press, move through `points` (fractions of the canvas) and release, like a hand would."""
    await page.mouse.move(box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"])
    await page.mouse.down()
    for fx, fy in points[1:]:
        await page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=steps)
    await page.mouse.up()


async def open_predict(context, url: str, timeout_ms: float):
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
    await page.locator(".st-key-predict_clear [data-testid^='stBaseButton']").click(timeout=timeout_ms)  # not its help
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


async def failure(error: Exception, what: str, page=None) -> list[tuple[str, str]]:
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


async def draw_and_predict(context, url: str, page, index: int, stop_at: float, stats: SessionStats, timeout_ms: float,
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
                page = watched(await open_predict(context, url, SETUP_MS))
            except Exception as error:  # noqa: BLE001
                stats.errors.extend(await failure(error, f"session {index}: reopening the page",
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
                        else await failure(error, f"session {index}: {phase}", page))
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

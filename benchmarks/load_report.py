"""The load script's figures (benchmarks/load.py): what one run measured, and the markdown table it prints."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

TARGET_MS = 200.0  # the target for a predict's p95, server time


@dataclass
class LoadResult:
    sessions: int
    seconds: float
    cpu_count: int
    cpu_model: str
    load_average_start: float
    browsers_nice: int = 0  # > 0: the browsers behind the server at this nice, as if on the visitors' own machines
    server_cores: list[int] = field(default_factory=list)  # set: the server side on these cores only, ...
    visitor_cores: list[int] = field(default_factory=list)  # ... the browsers, the driver and the script on these
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
    predict_cpu_p50_ms: float | None = None  # of which the script's thread ran on a core (CPU time) ...
    predict_runqueue_p50_ms: float | None = None  # ... and waited for one, runnable (Linux schedstat)
    predict_runqueue_p95_ms: float | None = None
    train_preset: str = ""
    train_step_start: int | None = None
    train_step_end: int | None = None
    train_images_per_second: float | None = None
    train_stopped: bool = False
    train_stop_seconds: float | None = None
    # The reference in the same run (benchmarks/cpu_probe.py): a bare CPU burst of about a predict's CPU, in a process
    # of its own at the server's priority, its wall time and its wait for a core.
    probe_burst_ms: float | None = None
    probe_bursts: int = 0
    probe_wall_p50_ms: float | None = None
    probe_wall_p95_ms: float | None = None
    probe_runqueue_p50_ms: float | None = None
    probe_runqueue_p95_ms: float | None = None
    cpu_cores: dict[str, float] = field(default_factory=dict)  # cores each side used while drawing (server, ...)
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


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100  # linear interpolation, as numpy.percentile
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _cores(cores: list[int]) -> str:
    return ("core " if len(cores) == 1 else "cores ") + ", ".join(map(str, cores))


def _where_browsers(r: LoadResult) -> str:
    """Where the browsers ran, beside the server or apart from it."""
    where = []
    if r.server_cores:
        where.append(f"the server, its training job and the reference on {_cores(r.server_cores)}, the browsers, "
                     f"Playwright's driver and this script on {_cores(r.visitor_cores)}, as if the visitors were on "
                     "machines of their own")
    else:
        where.append("the browsers run on them too")
    where.append(f"the browsers behind the server: nice {r.browsers_nice}" if r.browsers_nice
                 else "the browsers at the server's priority")
    return "; ".join(where)


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
        f"{r.load_average_end:.1f} at the end (other jobs may share the cores; {_where_browsers(r)})",
        f"server time: on the server's own clock, for each script run that read a drawing "
        f"({r.predict_server_samples} runs): the rerun request taken off the websocket -> the script's end "
        "(queueing + the run); in brackets the script run alone",
        "round trip (browser): mouse-up on the canvas -> the verdict on screen (canvas encoding, websocket, "
        "queueing, the rerun, rendering)",
        f"frames: the script's start -> finish frames (and the rerun request sent -> the finish frame) as the browser "
        f"receives them on loopback, so they add the browser's own delays ({r.rerun_samples} samples)",
        f"of the script run: CPU time p50 {_fmt(r.predict_cpu_p50_ms, 1)} ms; waiting for a core (runnable, the "
        f"cores busy with other processes) p50 / p95 {_fmt(r.predict_runqueue_p50_ms)} / "
        f"{_fmt(r.predict_runqueue_p95_ms)} ms",
        "CPU while drawing, in cores (of " + str(r.cpu_count) + "): "
        + (", ".join(f"{side} {cores:.2f}" for side, cores in r.cpu_cores.items()) or "not read")
        + " (driver: Playwright's, relaying every visitor's input, and this script)",
        (f"reference, same run: a bare {r.probe_burst_ms:g} ms CPU burst in a process of its own at the server's "
         f"priority (benchmarks/cpu_probe.py, {r.probe_bursts} bursts) took p50 / p95 {_fmt(r.probe_wall_p50_ms)} / "
         f"{_fmt(r.probe_wall_p95_ms)} ms wall, waiting for a core {_fmt(r.probe_runqueue_p50_ms)} / "
         f"{_fmt(r.probe_runqueue_p95_ms)} ms: what no server could beat on these cores"
         + (f"; the predict's server time p95 is {r.predict_server_p95_ms / r.probe_wall_p95_ms:.1f}x the burst's"
            if r.predict_server_p95_ms is not None and r.probe_wall_p95_ms else "")
         if r.probe_bursts else "reference: not measured"),
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

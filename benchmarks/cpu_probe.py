"""The load benchmark's reference: how long a fixed burst of CPU work takes, wall clock, on the cores the server shares.

    python benchmarks/cpu_probe.py --seconds 60 [--burst-ms 20] [--json PATH]
Calibrates a pure-Python loop to `--burst-ms` of CPU time alone, then runs it once every 0.2-0.6 s (at random) for
`--seconds`, recording each burst's wall time and how long it waited runnable for a core (Linux schedstat). It does
what a predict's script run does to the scheduler, about 20 ms of CPU after a pause, in a process of its own at the
server's priority but without Streamlit, so its figures are what no server design could beat on those cores at that
moment. benchmarks/load.py runs it beside the server while the sessions draw and prints it next to the server's time.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_timing import runqueue_wait  # noqa: E402 (the server's script runs are measured the same way)


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def calibrate(burst_ms: float) -> int:
    """Loop iterations that take `burst_ms` of this thread's CPU time (CPU time, not wall: true under load too)."""
    n = 20_000
    while True:
        start = time.thread_time()
        spin(n)
        used = time.thread_time() - start
        if used >= 0.05:
            return max(1, round(n * burst_ms / 1000 / used))
        n *= 2


def probe(seconds: float, burst_ms: float = 20.0, seed: int = 0) -> dict:
    """The bursts' wall times and waits, in ms, over `seconds`."""
    rng = random.Random(seed)
    n = calibrate(burst_ms)
    walls, waits, cpus = [], [], []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        time.sleep(rng.uniform(0.2, 0.6))
        wait0 = runqueue_wait()  # outside the burst: after a pause, opening a /proc file cost 6-10 ms of CPU here
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        spin(n)
        walls.append(1000 * (time.perf_counter() - wall0))
        cpus.append(1000 * (time.thread_time() - cpu0))
        waits.append(1000 * (runqueue_wait() - wait0))
    return {"burst_ms": burst_ms, "bursts": len(walls), "wall_ms": walls, "cpu_ms": cpus, "runqueue_ms": waits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--burst-ms", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.burst_ms <= 0:
        print("--seconds and --burst-ms must be positive", file=sys.stderr)
        return 2
    text = json.dumps(probe(args.seconds, args.burst_ms))
    print(text, flush=True)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training in a process of its own: the dashboard's pages never share an interpreter with the training loop.

`TrainingProcess(store_root)` starts `python -m core.training.worker --home ROOT`, a child that trains the runs it is
sent one after another. The two talk in JSON lines, never pickles: the parent writes `{"run": ID, "resume": bool}`
or `{"stop": ID}` to the child's stdin; the child writes the training events of core.training.train to its stdout
(each with the run id), ending each run with a "finished" event. When the parent goes away (its end of the pipe
closes) the child stops the run in hand, which ends `cancelled` and resumable, and exits.

Why: a training thread inside the server competes with every page rerun for the GIL, so watching a run live
slowed it down; in its own process it does not, and a crash in training (out of memory, a native library's abort)
ends that run as interrupted instead of taking the server down. The process runs at a lower priority (nice 10,
`DIGIT_LAB_WORKER_NICE`): when a class is predicting, their pages come first and training takes what is left;
when nobody else needs the CPU, training has all of it. It starts in a session of its own and lowers that session's
scheduling group too: Linux (with autogroups, the default on desktops and here) shares the CPU between sessions
before it looks at nice values, so a nice inside the server's session yielded only to the server itself, while a
browser on the same machine, in its own session, still split the cores evenly with server and training together.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]


class WorkerDied(RuntimeError):
    """The training process ended while a run was in hand."""


class TrainingProcess:
    """The parent's handle on one child training process (one per device)."""

    def __init__(self, store_root: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "core.training.worker", "--home", str(store_root)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                        cwd=REPO, env=env, start_new_session=True)  # its own CPU group
        self._write_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            try:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):  # the child is gone; the reader sees that
                pass

    def train(self, run_id: str, resume: bool, on_event: Callable[[dict[str, Any]], None],
              stopped: Callable[[], bool] = lambda: False) -> None:
        """Have the child train `run_id`, passing its events to `on_event` until the run's "finished" event.
        `stopped` is asked once the run is sent: a stop that raced with the start is sent again."""
        self.send({"run": run_id, "resume": resume})
        if stopped():
            self.stop(run_id)
        for event in self._events():
            if event.get("run_id") not in (None, run_id):
                continue  # a late line of an earlier run
            on_event(event)
            if event["type"] == "finished":
                return
        raise WorkerDied(f"The training process stopped (exit code {self.process.wait()}) before run {run_id} "
                         "finished; resume it from its last completed epoch.")

    def stop(self, run_id: str) -> None:
        self.send({"stop": run_id})

    def close(self) -> None:
        with self._write_lock:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def _events(self) -> Iterator[dict[str, Any]]:
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:  # something printed to stdout that is not ours: show it where logs go
                log.info("training process: %s", line.rstrip())
                continue
            if isinstance(event, dict) and "type" in event:
                yield event


# -- the child ---------------------------------------------------------------------------------------------
def serve(home: str, commands=sys.stdin, out=sys.stdout) -> int:
    """Train the runs named on `commands`, one after another, writing their events to `out` as JSON lines."""
    from core.runs import RunStore
    from core.training.experiment import execute_run

    store = RunStore(home)
    pending: list[tuple[str, bool]] = []
    stop_ids: set[str] = set()
    wake = threading.Condition()
    closed = threading.Event()
    write_lock = threading.Lock()

    def emit(run_id: str, event: dict[str, Any]) -> None:
        line = json.dumps({**event, "run_id": run_id}, default=float)
        with write_lock:
            out.write(line + "\n")
            out.flush()

    def read_commands() -> None:  # a thread: stop requests arrive while a run trains
        for line in commands:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with wake:
                if "run" in message:  # a stop that came before this request belonged to an earlier one
                    stop_ids.discard(str(message["run"]))
                    pending.append((str(message["run"]), bool(message.get("resume"))))
                elif "stop" in message:
                    stop_ids.add(str(message["stop"]))
                wake.notify_all()
        closed.set()  # the parent went away: stop what is in hand and exit
        with wake:
            wake.notify_all()

    threading.Thread(target=read_commands, name="digit-lab-commands", daemon=True).start()
    while True:
        with wake:
            wake.wait_for(lambda: pending or closed.is_set())
            if not pending:
                return 0
            run_id, resume = pending.pop(0)
        try:
            execute_run(store, run_id, on_event=lambda e, r=run_id: emit(r, e),
                        should_stop=lambda r=run_id: closed.is_set() or r in stop_ids, resume=resume)
        except Exception as error:  # noqa: BLE001 - refused before training (e.g. held by another process)
            emit(run_id, {"type": "finished", "status": "failed", "message": str(error), "test_accuracy": None})
        if closed.is_set():
            return 0


NICE = 10  # the training process yields the CPU to the server and its pages; alone on a machine it still gets all of it


def lower_priority(nice: int) -> None:
    """Lower this process's priority by `nice`, and its session's scheduling group (Linux autogroup) to `nice` when
    this process leads its session (as TrainingProcess starts it): never a group it shares with the server."""
    if hasattr(os, "nice"):
        os.nice(nice)  # a crowd's predictions are answered first; training takes what is left
    if hasattr(os, "getsid") and os.getsid(0) == os.getpid():
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except (OSError, ValueError):  # no autogroups (disabled, not Linux): the nice above is all there is
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train runs sent as JSON lines on stdin (the dashboard's worker).")
    parser.add_argument("--home", required=True, help="the run store's folder")
    parser.add_argument("--nice", type=int, default=int(os.environ.get("DIGIT_LAB_WORKER_NICE", NICE)),
                        help="scheduling priority to lower this process by (0 = as the server)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.nice:
        lower_priority(args.nice)
    return serve(args.home)


if __name__ == "__main__":
    raise SystemExit(main())

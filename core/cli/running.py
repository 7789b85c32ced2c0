"""Running a command's training: a progress bar, and Ctrl-C, SIGTERM and SIGHUP as a cooperative stop; the run
store every command opens (dead owners recovered first) and the exit codes."""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any, Iterator

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that Ctrl-C, SIGTERM (kill, a container stopping) or SIGHUP (the terminal closing) sets, so the
    run in progress ends 'cancelled' (resumable) within a batch; the previous handlers come back afterwards."""
    stop = threading.Event()
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(store, run_id: str, args: argparse.Namespace, *, resume: bool, ranks: Any = None) -> int:
    from tqdm import tqdm

    from core.training.experiment import execute_run

    bar = tqdm(total=None, unit="step", disable=args.json or args.quiet, file=sys.stderr, dynamic_ncols=True)

    def on_event(event: dict[str, Any]) -> None:
        try:
            show(event)
        except OSError:  # the terminal is gone (SIGHUP): the run still ends as it should, only unseen
            pass

    def show(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "started":
            bar.reset(total=event["total_steps"])
            bar.update(event["step"])
        elif kind == "step":
            bar.update(1)
            bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}", refresh=False)
        elif kind == "warning" and not args.json:
            bar.write(event["message"])
        elif kind == "epoch" and not args.json:
            bar.write(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, "
                      f"val loss {event['val_loss']:.4f}, val accuracy {event['val_accuracy']:.2%}"
                      + (f", privacy ε so far {event['epsilon']:.2f}" if "epsilon" in event else ""))

    try:
        with stop_on_signals() as stop:
            record = execute_run(store, run_id, on_event=on_event, should_stop=stop.is_set, resume=resume,
                                 ranks=ranks)
    finally:
        bar.close()
    summary = {"run_id": record.id, "status": record.status, "test_accuracy": record.metrics.get("test_accuracy"),
               "train_seconds": record.timings.get("train_seconds"),
               "images_per_second": record.timings.get("images_per_second"), "device": record.timings.get("device"),
               "precision": record.timings.get("precision"), "message": record.message}
    for key in ("epsilon", "robust_accuracy", "robust_eps"):  # DP and adversarial runs
        if key in record.metrics:
            summary[key] = record.metrics[key]
    if args.json:
        print(json.dumps(summary))
    else:
        acc = summary["test_accuracy"]
        print(f"run {record.id}: {record.status}" + (f", test accuracy {acc:.2%}" if acc is not None else "")
              + (f", {summary['train_seconds']:.1f} s training at {summary['images_per_second']:.0f} images/s"
                 if summary["train_seconds"] else "")
              + (f", privacy ε = {summary['epsilon']:.2f} (δ = {record.metrics.get('delta', 0):g})"
                 if "epsilon" in summary else "")
              + (f", PGD accuracy at ε = {summary['robust_eps']:g}: {summary['robust_accuracy']:.2%}"
                 if "robust_accuracy" in summary else "")
              + (f"\n{record.message}" if record.message else ""))
    return {"completed": EXIT_OK, "cancelled": EXIT_INTERRUPTED}.get(record.status, EXIT_RUN_FAILED)


def open_store():
    """The run store, with runs whose process died (killed, power lost) marked interrupted before any command acts."""
    from core.runs import RunStore

    store = RunStore()
    store.recover_interrupted()
    return store


def check_data(dataset: str) -> None:
    from core.data.datasets import load_splits

    load_splits(dataset)  # fails early, with the message naming the folder, before a run is created

"""The `digit-lab` command line: train, resume, list and evaluate runs without the dashboard.

`digit-lab train --preset seed-cnn --epochs 1 --json`; `digit-lab runs`; `digit-lab eval RUN`;
`digit-lab robustness starter --attack pgd --eps 0.1`.
Exit codes: 0 completed, 1 the run failed or diverged, 2 bad input, 130 stopped with Ctrl-C.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
import types
import typing
from typing import Any, Sequence

from core.training.config import PRESETS, SETTINGS, TrainConfig
from core.errors import DigitLabError

# Each command imports the parts of the engine it uses inside its handler, so `digit-lab runs` does not load
# the training loop and `digit-lab train` does not load the explanation libraries.
EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_SKIP_FIELDS = {"extra"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DigitLabError as error:
        flag = getattr(error, "field", None)
        print(f"error: {error}" + (f" [--{flag.replace('_', '-')}]" if flag else ""), file=sys.stderr)
        return EXIT_BAD_INPUT


# -- commands -----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from core.training.experiment import create_run

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if getattr(args, f.name) is not None}
    cfg = TrainConfig.from_preset(args.preset, **overrides) if args.preset else TrainConfig.from_dict(overrides)
    _check_data(cfg.dataset)
    store = _store()
    record = create_run(store, cfg, name=args.name)
    return _execute(store, record.id, args, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    store = _store()
    record = store.resolve(args.run)
    return _execute(store, record.id, args, resume=True)


def cmd_runs(args: argparse.Namespace) -> int:
    records = _store().list(status=args.status, model=args.model)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("No runs yet. Start one with: digit-lab train --preset fast")
        return EXIT_OK
    print(f"{'id':24} {'status':11} {'model':9} {'dataset':13} {'test acc':>8} {'seconds':>8}  name")
    for r in records:
        acc = f"{r.test_accuracy:.2%}" if r.test_accuracy is not None else "-"
        secs = r.timings.get("train_seconds")
        print(f"{r.id:24} {r.status:11} {r.model:9} {r.dataset:13} {acc:>8} "
              f"{secs if secs is not None else '-':>8}  {r.name}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from core.data.datasets import load_splits
    from core.inference.metrics import evaluate
    from core.inference.weights import load_source, model_source

    src = model_source(_store(), args.run)
    splits = load_splits(args.dataset or src.dataset)
    x, y = (splits.test_x, splits.test_y) if args.split == "test" else (splits.val_x, splits.val_y)
    result = evaluate(load_source(src), x, y)
    summary = {"run_id": src.key, "split": args.split, "images": result.n, "n": result.n,
               "accuracy": result.accuracy, "loss": result.loss}
    print(json.dumps(summary) if args.json else
          f"{src.name} ({src.key}) on {args.split}: accuracy {result.accuracy:.2%} over {result.n} images, "
          f"loss {result.loss:.4f}")
    return EXIT_OK


def cmd_robustness(args: argparse.Namespace) -> int:
    from core.data.datasets import load_splits
    from core.insight.attacks import AttackSettings, adversarial_accuracy
    from core.inference.weights import load_source, model_source

    settings = AttackSettings(args.attack, args.eps, args.steps)  # bad values raise a sentence (exit 2)
    if args.n < 1:
        raise DigitLabError(f"--n must be at least 1 test image (got {args.n}).")
    src = model_source(_store(), args.run)
    splits = load_splits(src.dataset)
    n = min(args.n, len(splits.test_y))
    result = adversarial_accuracy(load_source(src), splits.test_x[:n], splits.test_y[:n], settings)
    summary = {"run_id": src.key, "attack": result.attack, "eps": result.eps, "steps": result.steps, "n": result.n,
               "clean_accuracy": result.clean_accuracy, "adversarial_accuracy": result.adversarial_accuracy}
    print(json.dumps(summary) if args.json else
          f"{src.name} ({src.key}) on {n} test images: clean accuracy {result.clean_accuracy:.2%}, under "
          f"{result.attack.upper()}{f'-{result.steps}' if result.attack == 'pgd' else ''} at ε = {result.eps:g}: "
          f"{result.adversarial_accuracy:.2%}")
    return EXIT_OK


# -- running with a progress bar and Ctrl-C as a cooperative stop ------------------------------
def _execute(store, run_id: str, args: argparse.Namespace, *, resume: bool) -> int:
    from tqdm import tqdm

    from core.training.experiment import execute_run

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    bar = tqdm(total=None, unit="step", disable=args.json or args.quiet, file=sys.stderr, dynamic_ncols=True)

    def on_event(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "started":
            bar.reset(total=event["total_steps"])
            bar.update(event["step"])
        elif kind == "step":
            bar.update(1)
            bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}", refresh=False)
        elif kind == "epoch" and not args.json:
            bar.write(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, "
                      f"val loss {event['val_loss']:.4f}, val accuracy {event['val_accuracy']:.2%}"
                      + (f", privacy ε so far {event['epsilon']:.2f}" if "epsilon" in event else ""))

    try:
        record = execute_run(store, run_id, on_event=on_event, should_stop=stop.is_set, resume=resume)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    summary = {"run_id": record.id, "status": record.status, "test_accuracy": record.metrics.get("test_accuracy"),
               "train_seconds": record.timings.get("train_seconds"),
               "images_per_second": record.timings.get("images_per_second"), "message": record.message}
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


def _store():
    from core.runs import RunStore

    return RunStore()


def _check_data(dataset: str) -> None:
    from core.data.datasets import load_splits

    load_splits(dataset)  # fails early, with the message naming the folder, before a run is created


# -- argument parsing, generated from TrainConfig so every field is a flag ------------------------
def _config_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in _SKIP_FIELDS]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (override the preset)")
    for f in _config_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        default = f.default
        text = f"{SETTINGS[f.name].label} (default {default})"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, metavar=kind.__name__.upper(), help=text)


def _base_type(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digit-lab", description="Train and evaluate digit classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and record the run",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Presets:\n" + "\n".join(f"  {k}: {v['summary']}" for k, v in PRESETS.items()))
    train.add_argument("--preset", choices=list(PRESETS), help="start from a preset's settings")
    train.add_argument("--name", help="a name for the run")
    _add_output_flags(train)
    _add_config_flags(train)
    train.set_defaults(handler=cmd_train)

    resume = sub.add_parser("resume", help="continue a stopped or interrupted run from its last epoch")
    resume.add_argument("run", help="run id, unique id prefix, or name")
    _add_output_flags(resume)
    resume.set_defaults(handler=cmd_resume)

    runs = sub.add_parser("runs", help="list runs")
    runs.add_argument("--status")
    runs.add_argument("--model")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=cmd_runs)

    ev = sub.add_parser("eval", help="evaluate a run's saved weights")
    ev.add_argument("run", help="run id, unique id prefix, name, 'starter', or a .safetensors file")
    ev.add_argument("--split", choices=["test", "val"], default="test")
    ev.add_argument("--dataset", help="evaluate on another dataset than the run's")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(handler=cmd_eval)

    rob = sub.add_parser("robustness", help="accuracy of a run's model under an adversarial attack")
    rob.add_argument("run", help="run id, unique id prefix, name, 'starter', or a .safetensors file")
    rob.add_argument("--attack", choices=["fgsm", "pgd"], default="pgd")
    rob.add_argument("--eps", type=float, default=0.1, help="L∞ radius in pixel units of [0, 1] (default 0.1)")
    rob.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    rob.add_argument("--n", type=int, default=1000, help="test images to attack (default 1000)")
    rob.add_argument("--json", action="store_true")
    rob.set_defaults(handler=cmd_robustness)
    return parser


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end, no progress bar")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


if __name__ == "__main__":
    sys.exit(main())

"""The `digit-lab` command line: train, resume, list and evaluate runs without the dashboard.

`digit-lab train --preset seed-cnn --epochs 1 --json`; `digit-lab runs`; `digit-lab eval RUN`;
`digit-lab robustness starter --attack pgd --eps 0.1`;
`digit-lab transfer --source mnist --target fashion-mnist --k 1,10,100 --seeds 3 --json`;
`digit-lab drawings import "Class 3B" drawings.zip`; `digit-lab eval starter --drawings "Class 3B" --json`.
Exit codes: 0 completed, 1 the run failed or diverged, 2 bad input, 130 stopped (Ctrl-C, SIGTERM, SIGHUP).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import threading
import types
import typing
from typing import Any, Iterator, Sequence

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
    from core.training.distributed import announce_run, torchrun_ranks
    from core.training.experiment import create_run

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if getattr(args, f.name) is not None}
    cfg = TrainConfig.from_preset(args.preset, **overrides) if args.preset else TrainConfig.from_dict(overrides)
    _check_data(cfg.dataset)
    store = _store()
    with torchrun_ranks(cfg.device) as ranks:  # None unless started by torchrun with several processes
        if ranks and not ranks.main:
            return _follow(store, ranks, args, resume=False)
        run_id = announce_run(ranks, lambda: create_run(store, cfg, name=args.name).id)
        return _execute(store, run_id, args, resume=False, ranks=ranks)


def cmd_resume(args: argparse.Namespace) -> int:
    from core.training.distributed import announce_run, torchrun_ranks
    from core.training.experiment import check_startable

    store = _store()
    record = store.resolve(args.run)
    with torchrun_ranks(TrainConfig.from_dict(record.config).device) as ranks:
        if ranks and not ranks.main:
            return _follow(store, ranks, args, resume=True)

        def checked() -> str:  # queued or training in a live process (a dashboard server): that process's to finish
            check_startable(record, resume=True)
            return record.id
        return _execute(store, announce_run(ranks, checked), args, resume=True, ranks=ranks)


def _follow(store, ranks, args: argparse.Namespace, *, resume: bool) -> int:
    """A torchrun rank other than 0: train the run rank 0 names, quietly; rank 0 reports and records."""
    from core.training.distributed import wait_for_run
    from core.training.experiment import follow_run

    run_id = wait_for_run(ranks)
    if run_id is None:
        return EXIT_BAD_INPUT  # rank 0 printed why
    with _stop_on_signals() as stop:
        status = follow_run(store, run_id, ranks, should_stop=stop.is_set, resume=resume)
    return {"completed": EXIT_OK, "cancelled": EXIT_INTERRUPTED}.get(status, EXIT_RUN_FAILED)


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

    if args.drawings:
        return _eval_drawings(args)
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


def _eval_drawings(args: argparse.Namespace) -> int:
    from core.data.drawing_sets import DrawingStore
    from core.inference.drawing_scores import score_model

    store = _store()
    sets = DrawingStore(store.root)
    found = sets.resolve(args.drawings)
    score = score_model(store, sets, found.id, args.run, part=args.part)
    summary = {"run_id": score.key, "drawings": found.id, "set": found.name, "part": score.part, "n": score.n,
               "accuracy": score.accuracy, "recall": score.recall, "mistakes": score.mistake_ids}
    print(json.dumps(summary) if args.json else
          f"{score.name} ({score.key}) on drawing set {found.name} ({score.part}): accuracy {score.accuracy:.2%} "
          f"over {score.n} drawings, {len(score.mistakes)} mistakes")
    return EXIT_OK


def cmd_drawings(args: argparse.Namespace) -> int:
    from core.data.drawing_files import export_set, import_path
    from core.data.drawing_sets import DrawingStore

    store = _store()
    sets = DrawingStore(store.root)
    if args.action == "list":
        found = sets.list_sets()
        if args.json:
            print(json.dumps([dataclasses.asdict(s) for s in found]))
        elif not found:
            print("No drawing sets yet. Make one with: digit-lab drawings import SET FOLDER_OR_ZIP")
        else:
            print(f"{'id':12} {'drawings':>8}  per label 0-9{'':17}  name")
            for s in found:
                print(f"{s.id:12} {s.count:>8}  {' '.join(f'{c:>2}' for c in s.per_label):29}  {s.name}")
    elif args.action == "import":
        result = import_path(sets, args.set, args.source, drawer=args.drawer)
        summary = {"set_id": result.set.id, "set": result.set.name, "added": result.added, "created": result.created,
                   "drawings": result.set.count}
        print(json.dumps(summary) if args.json else
              f"{'Created' if result.created else 'Added to'} drawing set {result.set.name} ({result.set.id}): "
              f"{result.added} drawings imported, {result.set.count} in all")
    elif args.action == "export":
        found = sets.resolve(args.set)
        path = export_set(sets, found.id, args.file)
        print(json.dumps({"set_id": found.id, "file": str(path), "drawings": found.count}) if args.json else
              f"Exported {found.count} drawings of {found.name} to {path}")
    else:  # score: every finished run on the set
        from core.inference.drawing_scores import score_all

        found = sets.resolve(args.set)
        rows = score_all(store, sets, found.id, part=args.part)
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"{'accuracy':>8} {'n':>6}  {'key':24} name")
            for r in rows:
                acc = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
                print(f"{acc:>8} {r['n']:>6}  {r['key']:24} {r['name']}" + (f"  ({r['error']})" if r["error"] else ""))
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


def cmd_transfer(args: argparse.Namespace) -> int:
    from core.insight.invest import summarise, verdict
    from core.training.transfer import (TransferSpec, create_experiment, experiment_points, get_experiment, k_label,
                                        parse_ks, pretrain_summary, run_experiment)

    store = _store()
    if args.resume:
        exp = get_experiment(store, args.resume)
    else:
        spec = TransferSpec(source=args.source, target=args.target, model=args.model, ks=parse_ks(args.k),
                            seeds=args.seeds, backbone=args.backbone, pretrain_epochs=args.pretrain_epochs,
                            pretrain_steps=args.pretrain_steps, epochs=args.epochs, max_steps=args.max_steps)
        for dataset in (spec.source, spec.target):
            _check_data(dataset)
        exp = create_experiment(store, spec, name=args.name)
    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "run" and not (args.json or args.quiet):
            print(f"[{event['index'] + 1}/{event['runs']}] {event['name']}", file=sys.stderr, flush=True)

    with _stop_on_signals() as stop:
        run_experiment(store, exp.id, on_event=on_event, should_stop=stop.is_set)
    points = experiment_points(store, exp)
    if args.json:
        print(json.dumps([{key: p[key] for key in ("strategy", "k", "seed", "test_accuracy", "train_seconds", "flops",
                                                   "params", "energy_wh", "watts", "status", "run_id")}
                          for p in points]))
    else:
        print(f"experiment {exp.id}: {exp.name}")
        print(f"{'strategy':9} {'k':>5} {'seed':>4} {'status':10} {'test acc':>8} {'seconds':>8} {'GFLOP':>9}")
        for p in points:
            acc = f"{p['test_accuracy']:.2%}" if p["test_accuracy"] is not None else "-"
            secs = f"{p['train_seconds']:.1f}" if p["train_seconds"] is not None else "-"
            flops = f"{p['flops'] / 1e9:,.1f}" if p["flops"] is not None else "-"
            print(f"{p['strategy']:9} {k_label(p['k']):>5} {p['seed']:>4} {p['status']:10} {acc:>8} {secs:>8} {flops:>9}")
        summary, pretrain = summarise(points), pretrain_summary(store, exp)
        for k in exp.settings.ks:
            print(verdict(summary, pretrain, k).text)
    unfinished = [p for p in points if p["status"] != "completed"]
    if stop.is_set():
        print(f"Stopped; continue with: digit-lab transfer --resume {exp.id}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_RUN_FAILED if unfinished else EXIT_OK


# -- running with a progress bar; Ctrl-C, SIGTERM and SIGHUP as a cooperative stop -----------------
@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
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


def _execute(store, run_id: str, args: argparse.Namespace, *, resume: bool, ranks: Any = None) -> int:
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
        with _stop_on_signals() as stop:
            record = execute_run(store, run_id, on_event=on_event, should_stop=stop.is_set, resume=resume,
                                 ranks=ranks)
    finally:
        bar.close()
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
    """The run store, with runs whose process died (killed, power lost) marked interrupted before any command acts."""
    from core.runs import RunStore

    store = RunStore()
    store.recover_interrupted()
    return store


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
    ev.add_argument("--drawings", metavar="SET", help="evaluate on a drawing set (id or name) instead")
    ev.add_argument("--part", choices=["all", "train", "heldout"], default="all",
                    help="with --drawings: the whole set, or the half retraining uses or holds out (default all)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(handler=cmd_eval)

    dr = sub.add_parser("drawings", help="labelled drawing sets: list, import, export, score every model")
    dr_sub = dr.add_subparsers(dest="action", required=True)
    dr_list = dr_sub.add_parser("list", help="drawing sets with their counts")
    dr_list.add_argument("--json", action="store_true")
    dr_import = dr_sub.add_parser("import", help="add drawings from an exported zip, or from a folder or zip laid out "
                                                 "like ImageFolder (0/ ... 9/ of PNG or JPEG files); all or nothing")
    dr_import.add_argument("set", help="set id or name (a new name creates the set)")
    dr_import.add_argument("source", help="a .zip file or a folder")
    dr_import.add_argument("--drawer", default="import", help="who drew ImageFolder images (default 'import')")
    dr_import.add_argument("--json", action="store_true")
    dr_export = dr_sub.add_parser("export", help="write a set to one zip (PNGs, a CSV, the exact model inputs)")
    dr_export.add_argument("set", help="set id or name")
    dr_export.add_argument("file", help="the .zip to write")
    dr_export.add_argument("--json", action="store_true")
    dr_score = dr_sub.add_parser("score", help="accuracy of the starter and every finished run on a set")
    dr_score.add_argument("set", help="set id or name")
    dr_score.add_argument("--part", choices=["all", "train", "heldout"], default="all")
    dr_score.add_argument("--json", action="store_true")
    dr.set_defaults(handler=cmd_drawings)

    rob = sub.add_parser("robustness", help="accuracy of a run's model under an adversarial attack")
    rob.add_argument("run", help="run id, unique id prefix, name, 'starter', or a .safetensors file")
    rob.add_argument("--attack", choices=["fgsm", "pgd"], default="pgd")
    rob.add_argument("--eps", type=float, default=0.1, help="L∞ radius in pixel units of [0, 1] (default 0.1)")
    rob.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    rob.add_argument("--n", type=int, default=1000, help="test images to attack (default 1000)")
    rob.add_argument("--json", action="store_true")
    rob.set_defaults(handler=cmd_robustness)

    tr = sub.add_parser("transfer", help="is pre-training worth it? linear probe, fine-tuning and scratch at k labels",
                        description="Pre-train a backbone on SOURCE (or reuse --backbone RUN), then adapt it to TARGET "
                                    "with k labelled images per class three ways (linear probe, fine-tuning, from "
                                    "scratch), several seeds each. Every run lands in the run store.")
    tr.add_argument("--source", default="mnist", help="pre-training dataset: mnist, fashion-mnist, or mnist+fashion "
                                                      "(both pooled) (default mnist)")
    tr.add_argument("--target", default="fashion-mnist", help="downstream dataset (default fashion-mnist)")
    tr.add_argument("--model", default="seed-cnn", help="backbone from the zoo (default seed-cnn)")
    tr.add_argument("--k", default="1,5,10,50,100,all", help="labelled images per class, comma-separated; 'all' for "
                                                             "every image (default 1,5,10,50,100,all)")
    tr.add_argument("--seeds", type=int, default=3, help="runs per point (default 3)")
    tr.add_argument("--backbone", help="a completed run on SOURCE to use as the pre-trained model")
    tr.add_argument("--pretrain-epochs", type=int, default=2)
    tr.add_argument("--pretrain-steps", type=int, help="stop pre-training after this many steps")
    tr.add_argument("--epochs", type=int, default=4, help="downstream epochs per run (default 4)")
    tr.add_argument("--max-steps", type=int, default=600, help="downstream steps per run at most (default 600)")
    tr.add_argument("--name", help="a name for the experiment")
    tr.add_argument("--resume", metavar="EXPERIMENT", help="continue a stopped experiment by its id")
    _add_output_flags(tr)
    tr.set_defaults(handler=cmd_transfer)
    return parser


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end, no progress bar")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


if __name__ == "__main__":
    sys.exit(main())

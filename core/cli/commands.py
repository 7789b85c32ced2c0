"""The `digit-lab` commands, one function each (the parser in core/cli/parser.py names them)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from core.cli.running import (EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, check_data, execute,
                              open_store, stop_on_signals)
from core.errors import DigitLabError
from core.training.config import TrainConfig, advice, plan

SKIP_FIELDS = {"extra"}


def config_fields() -> list[dataclasses.Field]:
    """The TrainConfig fields that are command-line flags."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in SKIP_FIELDS]


def cmd_train(args: argparse.Namespace) -> int:
    from core.data.datasets import load_splits
    from core.training.distributed import announce_run, torchrun_ranks
    from core.training.experiment import create_run

    overrides = {f.name: getattr(args, f.name) for f in config_fields() if getattr(args, f.name) is not None}
    cfg = TrainConfig.from_preset(args.preset, **overrides) if args.preset else TrainConfig.from_dict(overrides)
    check_data(cfg.dataset)
    store = open_store()
    with torchrun_ranks(cfg.device) as ranks:  # None unless started by torchrun with several processes
        if ranks and not ranks.main:
            return _follow(store, ranks, args, resume=False)
        for note in advice(cfg, plan(cfg, load_splits(cfg.dataset, "cpu").sizes())):  # as the Train page warns
            print(f"note: {note}", file=sys.stderr)
        run_id = announce_run(ranks, lambda: create_run(store, cfg, name=args.name).id)
        return execute(store, run_id, args, resume=False, ranks=ranks)


def cmd_resume(args: argparse.Namespace) -> int:
    from core.training.distributed import announce_run, torchrun_ranks
    from core.training.experiment import check_startable

    store = open_store()
    record = store.resolve(args.run)
    with torchrun_ranks(TrainConfig.from_dict(record.config).device) as ranks:
        if ranks and not ranks.main:
            return _follow(store, ranks, args, resume=True)

        def checked() -> str:  # queued or training in a live process (a dashboard server): that process's to finish
            check_startable(record, resume=True)
            return record.id
        return execute(store, announce_run(ranks, checked), args, resume=True, ranks=ranks)


def _follow(store, ranks, args: argparse.Namespace, *, resume: bool) -> int:
    """A torchrun rank other than 0: train the run rank 0 names, quietly; rank 0 reports and records."""
    from core.training.distributed import wait_for_run
    from core.training.experiment import follow_run

    run_id = wait_for_run(ranks)
    if run_id is None:
        return EXIT_BAD_INPUT  # rank 0 printed why
    with stop_on_signals() as stop:
        status = follow_run(store, run_id, ranks, should_stop=stop.is_set, resume=resume)
    return {"completed": EXIT_OK, "cancelled": EXIT_INTERRUPTED}.get(status, EXIT_RUN_FAILED)


def cmd_runs(args: argparse.Namespace) -> int:
    records = open_store().list(status=args.status, model=args.model)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("No runs match." if args.status or args.model else "No runs yet. Start one with: digit-lab train --preset fast")
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
    src = model_source(open_store(), args.run)
    splits = load_splits(args.dataset or src.dataset)
    x, y = (splits.test_x, splits.test_y) if args.split == "test" else (splits.val_x, splits.val_y)
    result = evaluate(load_source(src), x, y)
    summary = {"run_id": src.key, "split": args.split, "images": result.n, "n": result.n,
               "accuracy": result.accuracy, "loss": result.loss}
    print(json.dumps(summary) if args.json else
          f"{src.name} ({src.key}) on {args.split}: accuracy {result.accuracy:.2%} over {result.n} images, "
          f"loss {result.loss:.4f}")
    return EXIT_OK


def _drawing_sets():
    """The run store and its drawing sets."""
    from core.data.drawing_sets import DrawingStore

    store = open_store()
    return store, DrawingStore(store.root)


def _eval_drawings(args: argparse.Namespace) -> int:
    from core.inference.drawing_scores import score_model

    store, sets = _drawing_sets()
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

    store, sets = _drawing_sets()
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
    src = model_source(open_store(), args.run)
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

    store = open_store()
    if args.resume:
        exp = get_experiment(store, args.resume)
    else:
        spec = TransferSpec(source=args.source, target=args.target, model=args.model, ks=parse_ks(args.k),
                            seeds=args.seeds, backbone=args.backbone, pretrain_epochs=args.pretrain_epochs,
                            pretrain_steps=args.pretrain_steps, epochs=args.epochs, max_steps=args.max_steps)
        for dataset in (spec.source, spec.target):
            check_data(dataset)
        exp = create_experiment(store, spec, name=args.name)
    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "run" and not (args.json or args.quiet):
            print(f"[{event['index'] + 1}/{event['runs']}] {event['name']}", file=sys.stderr, flush=True)

    with stop_on_signals() as stop:
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

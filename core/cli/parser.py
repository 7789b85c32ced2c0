"""The `digit-lab` argument parser, generated from TrainConfig so every training setting is a flag."""
from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from core.cli.commands import (cmd_drawings, cmd_eval, cmd_resume, cmd_robustness, cmd_runs, cmd_train, cmd_transfer,
                               config_fields)
from core.runs import STATUSES
from core.training.config import PRESETS, SETTINGS, TrainConfig


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (override the preset)")
    for f in config_fields():
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


def build_parser() -> argparse.ArgumentParser:
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
    runs.add_argument("--status", choices=STATUSES)
    runs.add_argument("--model", choices=SETTINGS["model"].options)
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

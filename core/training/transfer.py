"""Transfer experiments: does pre-training on one dataset pay off on another, and at which amount of labels?

`spec = TransferSpec(source="mnist", target="fashion-mnist", model="seed-cnn", ks=(1, 10, 100), seeds=3)`;
`exp = create_experiment(store, spec)` records a pre-training run (or reuses a finished run as the backbone)
and one run per (strategy, k, seed), all in the run store, where each is resumable and visible in Runs &
compare. `run_experiment(store, exp.id)` trains them in order in this process (the CLI);
`submit_experiment(jobs, exp.id)` queues them on the job manager (the dashboard). Both continue a stopped or
interrupted experiment where it left off. `experiment_points(store, exp)` reads the results.

The three strategies, with the same step budget for each (k labelled images per class, `repeat` passes so
an epoch holds at least `epoch_images` images, `epochs` epochs, at most `max_steps` steps):
probe = a new output layer on the frozen pre-trained features; finetune = a new output layer, every layer
trains; scratch = the same network from a fresh initialisation.
"""
from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.data.datasets import DATASETS, POOLED
from core.errors import ConfigError, RunNotFoundError
from core.models.zoo import ZOO
from core.runs import RESUMABLE, RunRecord, RunStore
from core.storage import atomic_write_json
from core.training.config import TrainConfig, reject_unknown

STRATEGIES = ("probe", "finetune", "scratch")
STRATEGY_TITLES = {"probe": "Linear probe (frozen pre-trained features)", "finetune": "Fine-tune pre-trained (all layers)",
                   "scratch": "From scratch"}
ALL = 0  # k = ALL: every labelled training image of the target
K_CHOICES = (1, 5, 10, 50, 100, ALL)
STRATEGY_LR = {"probe": 1e-2, "finetune": 1e-3, "scratch": 2e-3}  # Adam, cosine decay; the usual rates for each
MAX_SEEDS = 10
DEFAULT_WATTS = {"cpu": 35.0, "cuda": 300.0, "mps": 20.0}  # assumed device draw while training; editable on the page


def energy_wh(seconds: float, watts: float) -> float:
    """Energy in watt-hours for `seconds` of training at an assumed `watts` of device power."""
    return seconds * watts / 3600.0


def device_watts(record: RunRecord) -> float:
    """The assumed power of the device `record` trained on (DEFAULT_WATTS by device type)."""
    return DEFAULT_WATTS.get(str(record.timings.get("device") or "cpu").split(":")[0], DEFAULT_WATTS["cpu"])


def targets_for(source: str) -> list[str]:
    """The datasets a backbone pre-trained on `source` may be adapted to: none whose images it has seen."""
    seen = {"mnist", "fashion-mnist"} if source == POOLED else {source}
    return [name for name in DATASETS if name not in seen and name != POOLED]


def k_label(k: int) -> str:
    return "all" if k == ALL else str(k)


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,10,all' -> (1, 10, 0); a sentence for anything else."""
    ks = []
    for part in (p.strip().lower() for p in str(text).split(",")):
        if part == "all":
            ks.append(ALL)
        elif part.isdigit() and int(part) > 0:
            ks.append(int(part))
        else:
            raise ConfigError(f"Labelled images per class must be positive whole numbers or 'all', separated by "
                              f"commas (got {part!r}).", field="k")
    return tuple(sorted(set(ks), key=lambda k: math.inf if k == ALL else k))


@dataclass(frozen=True)
class TransferSpec:
    """What one experiment compares; every field is checked when it is made."""

    source: str = "mnist"  # pre-training dataset
    target: str = "fashion-mnist"  # the downstream task
    model: str = "seed-cnn"  # backbone from the zoo (the same network for all three strategies)
    ks: tuple[int, ...] = K_CHOICES  # labelled images per class; ALL (0) = every training image
    seeds: int = 3  # runs per (strategy, k): mean and spread
    backbone: str | None = None  # a finished run on `source` to use as the pre-trained model (else pre-train one)
    pretrain_epochs: int = 2  # pre-training: one-cycle Adam over the source's training split
    pretrain_steps: int | None = None  # stop pre-training after this many steps (quick demos and tests)
    epochs: int = 4  # downstream budget: epochs per run
    epoch_images: int = 2_000  # downstream budget: few labels repeat until an epoch holds at least this many images
    max_steps: int = 600  # downstream budget: no run takes more optimiser steps
    batch_size: int = 64
    strategies: tuple[str, ...] = STRATEGIES

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            if getattr(self, name) not in DATASETS:
                raise ConfigError(f"Unknown dataset {getattr(self, name)!r}; choose one of: {', '.join(DATASETS)}.",
                                  field=name)
        if self.target not in targets_for(self.source):
            raise ConfigError("Pre-training on the target's own labelled images would make the few-label question "
                              "meaningless: choose a different source dataset"
                              + (" (the pooled source holds MNIST and Fashion-MNIST; adapt it to the scikit-learn "
                                 "digits)." if self.source == POOLED else "."), field="target")
        if self.model not in ZOO:
            raise ConfigError(f"Unknown model {self.model!r}; the zoo has: {', '.join(ZOO)}.", field="model")
        object.__setattr__(self, "ks", tuple(self.ks))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.ks or any(not isinstance(k, int) or k < 0 for k in self.ks):
            raise ConfigError(f"Choose at least one amount of labelled images per class (got {self.ks!r}).", field="k")
        if not self.strategies or set(self.strategies) - set(STRATEGIES):
            raise ConfigError(f"Strategies must be among {', '.join(STRATEGIES)} (got {self.strategies!r}).",
                              field="strategies")
        limits = {"seeds": (1, MAX_SEEDS), "pretrain_epochs": (1, 100), "epochs": (1, 1_000),
                  "epoch_images": (1, 10**6), "max_steps": (1, 10**6), "batch_size": (1, 4_096)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name.replace('_', ' ').capitalize()} must be a whole number from {low:,} to "
                                  f"{high:,} (got {value!r}).", field=name)
        if self.pretrain_steps is not None and not (isinstance(self.pretrain_steps, int) and self.pretrain_steps >= 1):
            raise ConfigError(f"Pre-training steps must be at least 1 (got {self.pretrain_steps!r}).",
                              field="pretrain_steps")

    @property
    def title(self) -> str:
        return f"{ZOO[self.model].title}: {DATASETS[self.source].title} → {DATASETS[self.target].title}"

    def pretrain_config(self) -> TrainConfig:
        return TrainConfig(model=self.model, dataset=self.source, optimizer="adam", lr=3e-3, schedule="onecycle",
                           batch_size=128, epochs=self.pretrain_epochs, max_steps=self.pretrain_steps,
                           extra={"transfer": "pretrain"})

    def point_config(self, strategy: str, k: int, seed: int, backbone: str) -> TrainConfig:
        """The downstream run for one point: the same budget rule for every strategy."""
        repeat = max(1, math.ceil(self.epoch_images / (k * 10))) if k != ALL else 1
        return TrainConfig(
            model=self.model, dataset=self.target, optimizer="adam", lr=STRATEGY_LR[strategy], schedule="cosine",
            batch_size=self.batch_size, epochs=self.epochs, max_steps=self.max_steps, seed=seed,
            per_class=k or None, repeat=repeat,
            init_from=None if strategy == "scratch" else backbone,
            transfer="none" if strategy == "scratch" else strategy,
            extra={"transfer": strategy, "k": k})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ks": list(self.ks), "strategies": list(self.strategies)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TransferSpec":
        reject_unknown(cls, values, "experiment setting")
        return cls(**values)  # lists from JSON become tuples in __post_init__

    def run_count(self) -> int:
        return len(self.strategies) * len(self.ks) * self.seeds + (0 if self.backbone else 1)


@dataclass
class Experiment:
    """One experiment's record: its spec, the pre-training run and the run behind every point."""

    id: str
    name: str
    created: float
    spec: dict[str, Any]
    pretrain: str  # run id of the pre-trained backbone (trained for this experiment or reused)
    pretrain_reused: bool  # True when an existing run serves as the backbone
    points: list[dict[str, Any]] = field(default_factory=list)  # {"strategy", "k", "seed", "run_id"}

    @property
    def settings(self) -> TransferSpec:
        return TransferSpec.from_dict(self.spec)

    def run_ids(self) -> list[str]:
        """Every run of the experiment in training order: the backbone first (unless reused), then the points."""
        return ([] if self.pretrain_reused else [self.pretrain]) + [p["run_id"] for p in self.points]


# -- the store ------------------------------------------------------------------------------------
def _folder(store: RunStore) -> Path:
    path = store.root / "experiments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save(store: RunStore, exp: Experiment) -> None:
    atomic_write_json(_folder(store) / f"{exp.id}.json", dataclasses.asdict(exp))


def get_experiment(store: RunStore, exp_id: str) -> Experiment:
    path = _folder(store) / f"{exp_id}.json"
    if not exp_id or not all(c.isalnum() or c == "-" for c in exp_id) or not path.is_file():
        raise RunNotFoundError(f"No transfer experiment {exp_id!r} in {store.root}.")
    return Experiment(**json.loads(path.read_text()))


def list_experiments(store: RunStore) -> list[Experiment]:
    """Every experiment in the store, newest first (a damaged record is skipped)."""
    found = []
    for path in _folder(store).glob("*.json"):
        try:
            found.append(Experiment(**json.loads(path.read_text())))
        except (json.JSONDecodeError, TypeError):
            continue
    return sorted(found, key=lambda e: e.created, reverse=True)


def check_backbone(store: RunStore, spec: TransferSpec, key: str) -> RunRecord:
    """The finished run `key` when it can serve as `spec`'s pre-trained backbone; a sentence why not otherwise."""
    record = store.resolve(key)
    if record.status != "completed":
        raise ConfigError(f"Run {record.name} is {record.status}; only a completed run can be the pre-trained "
                          "backbone.", field="backbone")
    if record.model != spec.model:
        raise ConfigError(f"Run {record.name} is a {record.model}; this experiment compares {spec.model} models.",
                          field="backbone")
    if record.dataset != spec.source:
        raise ConfigError(f"Run {record.name} was trained on {record.dataset}, not on the source {spec.source}.",
                          field="backbone")
    return record


def create_experiment(store: RunStore, spec: TransferSpec, name: str | None = None) -> Experiment:
    """Record the experiment and create all its runs (queued); nothing trains yet."""
    from core.training.experiment import create_run

    if spec.backbone:
        pretrain = check_backbone(store, spec, spec.backbone).id
    else:
        pretrain = create_run(store, spec.pretrain_config(), name=f"Pre-train {spec.model} on {spec.source}").id
    exp_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    exp = Experiment(id=exp_id, name=(name or spec.title).strip()[:120] or spec.title, created=time.time(),
                     spec=spec.to_dict(), pretrain=pretrain, pretrain_reused=bool(spec.backbone))
    # Order: each seed's whole curve before the next seed, so a first picture appears early.
    for seed in range(spec.seeds):
        for k in spec.ks:
            for strategy in spec.strategies:
                cfg = spec.point_config(strategy, k, seed, pretrain)
                labels = "all labels" if k == ALL else f"{k} per class"
                record = create_run(store, cfg, name=f"{strategy} · {labels} · seed {seed} ({spec.source}→{spec.target})",
                                    parent=pretrain if strategy != "scratch" else None)
                exp.points.append({"strategy": strategy, "k": k, "seed": seed, "run_id": record.id})
    _save(store, exp)
    return exp


# -- running ----------------------------------------------------------------------------------------
def _pretrain_problem(store: RunStore, exp: Experiment) -> str:
    record = store.get(exp.pretrain)
    return (f"The pre-trained backbone ({record.name}) is {record.status}, so the probe and fine-tune points cannot "
            "train" + (f": {record.message}" if record.message else "."))


def run_experiment(store: RunStore, exp_id: str, *, on_event: Callable[[dict[str, Any]], None] = lambda e: None,
                   should_stop: Callable[[], bool] = lambda: False) -> Experiment:
    """Train every unfinished run of the experiment in this process, in order (the CLI's path).

    Stops early when `should_stop()` turns true (the current run ends cancelled and resumes later).
    """
    from core.training.experiment import execute_run

    exp = get_experiment(store, exp_id)
    for index, run_id in enumerate(exp.run_ids()):
        if should_stop():
            break
        if _status(store, run_id) in ("completed", "diverged", "deleted"):
            continue
        record = store.get(run_id)
        if run_id != exp.pretrain and record.config.get("init_from") and _status(store, exp.pretrain) != "completed":
            continue  # no backbone: the transfer points wait; scratch still runs
        on_event({"type": "run", "index": index, "runs": len(exp.run_ids()), "run_id": run_id, "name": record.name})
        execute_run(store, run_id, on_event=on_event, should_stop=should_stop, resume=record.status in RESUMABLE)
    return exp


def submit_experiment(jobs, exp_id: str) -> int:
    """Queue every unfinished run of the experiment on the job manager, in order; returns how many were queued.

    Used to launch an experiment and to continue one that was stopped or cut short by a server restart.
    """
    exp = get_experiment(jobs.store, exp_id)
    queued = 0
    for run_id in exp.run_ids():
        job = jobs.get(run_id)
        if (job is not None and not job.done) or _status(jobs.store, run_id) == "deleted":
            continue
        record = jobs.store.get(run_id)
        if record.status == "queued":
            jobs.run(run_id)
        elif record.status in RESUMABLE:
            jobs.resume(run_id)
        else:
            continue
        queued += 1
    return queued


def stop_experiment(jobs, exp_id: str) -> None:
    """Cancel the experiment's queued runs and stop its running one within a batch (all resumable)."""
    for run_id in reversed(get_experiment(jobs.store, exp_id).run_ids()):  # the queue's tail first
        job = jobs.get(run_id)
        if job is not None and not job.done:
            jobs.stop(run_id)


# -- results ------------------------------------------------------------------------------------------
def run_cost(record: RunRecord) -> dict[str, Any]:
    """What training `record` cost: seconds, estimated training FLOPs (validation and testing excluded), parameters."""
    from core.models.zoo import train_flops

    timings = record.timings
    seconds = timings.get("train_seconds")
    flops = timings.get("train_flops")
    if flops is None and timings.get("train_seconds"):  # runs recorded before FLOPs were: from images/s × seconds
        images = timings.get("images") or timings.get("images_per_second", 0) * timings["train_seconds"]
        flops = train_flops(record.model, int(images), head_only=record.config.get("transfer") == "probe")
    watts = device_watts(record)
    return {"train_seconds": seconds, "flops": flops, "params": record.params, "watts": watts,
            "energy_wh": energy_wh(seconds, watts) if seconds else None}


def pretrain_summary(store: RunStore, exp: Experiment) -> dict[str, Any]:
    """The backbone's run: status, its own test accuracy (on the source), and what pre-training cost."""
    record = store.get(exp.pretrain)
    return {"run_id": record.id, "name": record.name, "status": record.status, "reused": exp.pretrain_reused,
            "device": record.timings.get("device"),
            "dataset": record.dataset, "test_accuracy": record.test_accuracy, **run_cost(record)}


def experiment_points(store: RunStore, exp: Experiment) -> list[dict[str, Any]]:
    """One row per point: strategy, k, seed, run status and, once finished, accuracy and cost."""
    rows = []
    for point in exp.points:
        try:
            record = store.get(point["run_id"])
        except RunNotFoundError:  # deleted from Runs & compare: the point is simply missing
            continue
        finished = record.status == "completed"
        rows.append({**point, "status": record.status, "labels": point["k"] * 10 if point["k"] else
                     record.dataset_sizes.get("train"), "test_accuracy": record.test_accuracy if finished else None,
                     **(run_cost(record) if finished else {"train_seconds": None, "flops": None, "params": record.params,
                                                       "watts": None, "energy_wh": None})})
    return rows


def experiment_progress(store: RunStore, exp: Experiment) -> dict[str, Any]:
    """How far the experiment is: runs per status, how many are finished, and a sentence when the backbone failed."""
    statuses: dict[str, int] = {}
    for run_id in exp.run_ids():
        status = _status(store, run_id)
        statuses[status] = statuses.get(status, 0) + 1
    pretrain = _status(store, exp.pretrain)
    problem = None
    if pretrain == "deleted":
        problem = "The pre-trained backbone's run was deleted: the probe and fine-tune points cannot train."
    elif pretrain not in ("queued", "running", "completed"):
        problem = _pretrain_problem(store, exp)
    return {"total": len(exp.run_ids()), "done": sum(statuses.get(s, 0) for s in ("completed", "diverged", "deleted")),
            "statuses": statuses, "problem": problem}


def live_runs(jobs, exp: Experiment) -> list[str]:
    """The experiment's runs the job manager has queued or is training now."""
    return [run_id for run_id in exp.run_ids() if (job := jobs.get(run_id)) is not None and not job.done]


def held_elsewhere(store: RunStore, exp: Experiment):
    """The lease of another live process (e.g. `digit-lab transfer` in a terminal) training this experiment, if any."""
    for run_id in exp.run_ids():
        try:
            owner = store.get(run_id).held_elsewhere()
        except RunNotFoundError:
            continue
        if owner is not None:
            return owner
    return None


def _status(store: RunStore, run_id: str) -> str:
    try:
        return store.get(run_id).status
    except RunNotFoundError:
        return "deleted"

"""A run from start to finish: create it in the store, train with epoch checkpoints, test, save.

`run = create_run(store, cfg)` then `execute_run(store, run.id, on_event=..., should_stop=...)`;
`execute_run(..., resume=True)` continues a stopped or interrupted run from its last epoch. The CLI
and the job manager both go through here, so a run looks the same whoever started it, and one process at a
time trains a run (a lock in its folder).
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from core.training.checkpoint import load_state, save_state
from core.training.config import TrainConfig
from core.data.datasets import load_splits
from core.errors import DigitLabError
from core.inference.metrics import evaluate
from core.models.zoo import ZOO, train_flops, with_glow
from core.ownership import Lease, train_lock
from core.runs import RESUMABLE, RUN_STEP_POINTS, STEP_POINTS, RunRecord, RunStore, thinned
from core.training.distributed import Ranks
from core.training.devices import pick_device, resolve_precision
from core.training.train import Event, TrainOutcome, adversarial_settings, train, training_splits
from core.inference.evaluation import remember_predictions
from core.inference.weights import load_source, model_source, save_model

log = logging.getLogger(__name__)
ROBUST_IMAGES = 1_000  # test images an adversarially trained run is attacked on (PGD-40 at its ε) when it ends
ROBUST_STEPS = 40


def create_run(store: RunStore, cfg: TrainConfig, name: str | None = None, parent: str | None = None) -> RunRecord:
    """A queued run for `cfg`, with the zoo's size figures recorded."""
    spec = ZOO[cfg.model]
    if cfg.drawings:  # a set's name becomes its id; a missing or empty set is refused before the run exists
        from core.data.drawing_parts import part_ids
        from core.data.drawing_sets import DrawingStore

        sets = DrawingStore(store.root)
        found = sets.resolve(cfg.drawings)
        if not part_ids(sets, found.id, "train"):
            raise DigitLabError(f"The drawing set {found.name!r} has no drawings to train on yet.")
        cfg = cfg.replace(drawings=found.id)
    return store.create(cfg.to_dict(), name=name, params=spec.params, flops=spec.flops, parent=parent)


def execute_run(store: RunStore, run_id: str, *, on_event: Callable[[Event], None] = lambda e: None,
                should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
                ranks: Ranks | None = None) -> RunRecord:
    """Train run `run_id` to an end state (completed/cancelled/diverged/failed) and record it.

    Never raises for training problems: the returned record's status and message say what happened. Raises a
    DigitLabError, leaving the run as it was, when the run cannot start here: another process trains it (the
    run folder's lock) or has it queued (its owner lease), or it is not resumable. Under torchrun this is rank 0's
    part (`ranks`); the other ranks call `follow_run`.
    """
    store.get(run_id)  # an unknown run is refused before its folder is touched
    with train_lock(store.folder(run_id), run_id):  # one trainer per run, across processes, for the whole run
        record = store.get(run_id)  # read under the lock: a run another process just finished is seen finished
        check_startable(record, resume)
        cfg = TrainConfig.from_dict(record.config)
        store.update(run_id, status="running", owner=Lease.mine(), message="")
        try:
            record = _train_run(store, record, cfg, on_event, should_stop, resume, ranks)
        except Exception as error:  # noqa: BLE001 - any failure becomes a 'failed' run with a message
            log.error("run %s failed:\n%s", run_id, traceback.format_exc())
            text = str(error) if isinstance(error, DigitLabError) else f"{type(error).__name__}: {error}"
            record = store.update(run_id, status="failed", owner=None, message=f"Training failed: {text}")
            on_event({"type": "failed", "run_id": run_id, "message": record.message})
    on_event({"type": "finished", "run_id": run_id, "status": record.status, "message": record.message,
              "test_accuracy": record.metrics.get("test_accuracy")})
    return record


def check_startable(record: RunRecord, resume: bool) -> None:
    """Raise a DigitLabError saying why `record` cannot be trained (or resumed) by this process now."""
    record.check_free()
    if resume and record.status not in (*RESUMABLE, "queued"):  # queued: a job manager queued the resume
        raise DigitLabError(f"Run {record.id} is {record.status}; only {', '.join(RESUMABLE)} runs resume.")
    if resume and record.config.get("dp"):  # checked before the run is touched, so it stays as it was
        raise DigitLabError(f"Run {record.id} trained with differential privacy and cannot resume: the privacy "
                            "spent so far is not in its checkpoint, so ε would be reported wrong. Start it again.")


def follow_run(store: RunStore, run_id: str, ranks: Ranks, *, should_stop: Callable[[], bool] = lambda: False,
               resume: bool = False) -> str:
    """A rank other than 0 under torchrun: train run `run_id` alongside rank 0, writing nothing; the end status."""
    record = store.get(run_id)
    cfg = TrainConfig.from_dict(record.config)
    start = _inputs(store, record, cfg, ranks.device, resume)
    return train(cfg, start.splits, device=ranks.device, should_stop=should_stop, resume=start.state,
                 init_weights=start.init, drawings_root=store.root, ranks=ranks).status


@dataclass(frozen=True)
class _Inputs:
    """What training starts from (see _inputs)."""
    splits: Any  # core.data.datasets.Splits on the training device
    state: Any  # the checkpoint's TrainState when resuming, else None
    note: str  # why an older checkpoint was loaded, else ""
    init: dict | None  # the starting model's weights when fine-tuning
    glow: float  # the glow the trained model reads through (0: none)


def _inputs(store: RunStore, record: RunRecord, cfg: TrainConfig, device, resume: bool) -> _Inputs:
    """What training starts from: the dataset on `device`, the checkpoint's state when resuming (with a note when an
    older checkpoint had to be used), the starting model's weights when fine-tuning, and the glow the trained model is
    to read through (the starting model's, for a drawing set's retrain on its own dataset; else none)."""
    splits = load_splits(cfg.dataset, device)
    state, note = None, ""
    folder = store.folder(record.id)
    if resume and (folder / "checkpoint.json").is_file():
        state, note = load_state(folder, cfg, device)
    init, glow = None, 0.0
    if cfg.init_from:  # also when resuming: the hard-example weights come from the starting model
        source = model_source(store, cfg.init_from)  # a run or the starter
        if source.model != cfg.model:
            raise DigitLabError(f"{source.name} is a {source.model} model; fine-tuning it needs model={source.model}.")
        start = load_source(source)
        # Trained from the weights as they were trained; a drawing set's retrain reads as its starting model read,
        # through its glow (core.models.zoo.Glow: the starter retrained on a set reads other writers' handwriting
        # 1.5 points better with it, the case measured); any other run reads without one, as runs from scratch do
        init = {k: v for k, v in start.state_dict().items() if not k.startswith("glow.")}
        glow = start.glow_amount if cfg.drawings and cfg.transfer == "none" and source.dataset == cfg.dataset else 0.0
    return _Inputs(splits, state, note, init, glow)


def _train_run(store: RunStore, record: RunRecord, cfg: TrainConfig, on_event: Callable[[Event], None],
               should_stop: Callable[[], bool], resume: bool, ranks: Ranks | None = None) -> RunRecord:
    """Load data (and the checkpoint when resuming), train, test and record; the caller holds the run's lock."""
    run_id, folder = record.id, store.folder(record.id)
    device = ranks.device if ranks else pick_device(cfg.device)
    start = _inputs(store, record, cfg, device, resume)
    splits, state, note = start.splits, start.state, start.note
    store.truncate_metrics(run_id, state.epoch if state else 0)
    sizes = training_splits(cfg, splits, store.root).sizes()
    if cfg.drawings:  # the set's train half, before oversampling
        from core.data.drawing_parts import train_part_size

        sizes["drawings"] = train_part_size(cfg.drawings, store.root)
    store.update(run_id, dataset_sizes=sizes,
                 timings={**record.timings, "device": str(device), "precision": resolve_precision(cfg, device),
                          "processes": ranks.world if ranks else 1},
                 message=note, unfinished_steps=[])  # a resume re-runs the epoch they were from
    if note:  # the previous epoch's checkpoint was loaded instead of a damaged latest one
        log.warning("run %s: %s", run_id, note)
        on_event({"type": "warning", "run_id": run_id, "message": note})

    epoch_steps: list[list[float]] = []  # this epoch's [step, loss, lr], kept with its metrics row
    step_points = max(2, min(STEP_POINTS, RUN_STEP_POINTS // max(cfg.epochs, 1)))  # a long run's file stays small

    def forward(event: Event) -> None:
        if event["type"] == "step":
            epoch_steps.append([event["step"], event["loss"], event["lr"]])
        elif event["type"] == "epoch":
            store.append_metrics(run_id, {**{k: v for k, v in event.items() if k != "preview"},
                                          "steps": thinned(epoch_steps, step_points)})
            epoch_steps.clear()
        on_event(event)

    try:
        outcome = train(cfg, splits, device=device, on_event=forward, should_stop=should_stop,
                        save_state=lambda s: save_state(folder, s, cfg.model), resume=state, init_weights=start.init,
                        drawings_root=store.root, ranks=ranks)
    finally:  # stopped, diverged or failed mid-epoch: that epoch's curve is kept too (a diverged run's shows why)
        if epoch_steps:
            try:
                store.update(run_id, unfinished_steps=thinned(epoch_steps, step_points))
            except (OSError, DigitLabError) as error:  # never in place of the error that ended the run
                log.warning("run %s: its unfinished epoch's steps were not kept: %s", run_id, error)
    return _finish(store, run_id, cfg, outcome, splits, on_event, note, start.glow)


def _finish(store: RunStore, run_id: str, cfg: TrainConfig, outcome: TrainOutcome, splits,
            on_event: Callable[[Event], None], note: str = "", glow: float = 0.0) -> RunRecord:
    state = outcome.state
    model = with_glow(state.model, glow) if glow else state.model  # as it will read: every figure is of this
    message = " ".join(text for text in (note, outcome.message) if text)
    timings = {**store.get(run_id).timings, "train_seconds": round(state.train_seconds, 3),
               "images_per_second": round(state.images / state.train_seconds, 1) if state.train_seconds else 0.0,
               "epochs_completed": state.epoch, "steps": state.step, "images": state.images,
               "train_flops": train_flops(cfg.model, state.images, head_only=cfg.transfer == "probe",
                                          attack_steps=adversarial_settings(cfg).steps if cfg.adversarial != "none" else 0)}
    if outcome.status == "diverged":
        return store.update(run_id, status="diverged", message=message, timings=timings, owner=None)
    on_event({"type": "testing", "images": len(splits.test_y)})  # can take seconds: say so
    test = evaluate(model, splits.test_x, splits.test_y)
    metrics = {"test_accuracy": test.accuracy, "test_loss": test.loss, **({"read_glow": glow} if glow else {})}
    if state.history:  # with early stopping the weights are the best epoch's, so its figures are reported
        row = min(state.history, key=lambda r: r["val_loss"]) if cfg.patience else state.history[-1]
        metrics.update(val_accuracy=row["val_accuracy"], val_loss=row["val_loss"])
        if "epsilon" in state.history[-1]:  # DP: the privacy spent by the whole run
            metrics.update(epsilon=state.history[-1]["epsilon"], delta=cfg.delta)
    if cfg.adversarial != "none":  # Runs & compare plots clean against robust accuracy
        from core.insight.attacks import AttackSettings, adversarial_accuracy

        on_event({"type": "robustness", "images": ROBUST_IMAGES, "eps": cfg.adv_eps, "attack": "pgd"})
        robust = adversarial_accuracy(model, splits.test_x[:ROBUST_IMAGES], splits.test_y[:ROBUST_IMAGES],
                                      AttackSettings("pgd", cfg.adv_eps, ROBUST_STEPS), seed=cfg.seed)
        metrics.update(robust_accuracy=robust.adversarial_accuracy, robust_eps=cfg.adv_eps)
    if cfg.drawings:  # before/after on the drawing set's held-out half
        from core.training.retrain import drawings_record

        try:
            metrics.update(drawings_record(store, cfg, model))
        except DigitLabError as error:  # the set was deleted meanwhile: the run still ends with its weights
            message = " ".join(t for t in (message, f"The drawing set could not be scored: {error}") if t)
    sha = save_model(store.weights_path(run_id), model, cfg.model, {"run_id": run_id, "dataset": cfg.dataset})
    remember_predictions(store, sha, cfg.dataset, "test", test)  # Evaluate then opens on this run at once
    return store.update(run_id, status=outcome.status, message=message, metrics=metrics, timings=timings,
                        weights_sha256=sha, owner=None)

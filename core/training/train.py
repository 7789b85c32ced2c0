"""One flat training loop: events out through `on_event`, a stop flag in through `should_stop`.

`train(cfg, splits, on_event=print)` trains a fresh model (or continues a `TrainState` given as
`resume`) and returns a `TrainOutcome`; `save_state(state)` is called after every epoch so a run can
resume from there. Nothing of the UI reaches this file.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.training.allocator import keep_freed_memory
from core.training.config import TrainConfig, plan
from core.training.graphs import GraphedStep, graphable, set_lr
from core.training.devices import pick_device, place, resolve_precision
from core.training.readback import PendingStep, read_back_every, step_figures
from core.training.schedule import lr_at
from core.data.datasets import Splits, augment_batch, to_float
from core.data.drawing_parts import DrawingImages
from core.data.drawing_parts import images as drawing_images
from core.data.drawing_sets import DrawingStore
from core.inference.metrics import evaluate, predict_probs
from core.insight.attacks import AttackSettings, perturb
from core.models.zoo import Classifier, build_model, head_name

if TYPE_CHECKING:
    from core.training.distributed import Ranks

PREVIEW_IMAGES = 12  # validation images whose predictions every epoch event carries
DIVERGENCE_WINDOW = 20  # steps into an epoch before its mean loss is judged
DIVERGENCE_FACTOR = 10  # a mean loss this many times a uniform guess's means the run has blown up
Event = dict[str, Any]  # {"type": "started"|"step"|"epoch"|"finished"|..., ...}; JSON-serialisable


@dataclass
class TrainState:
    """What an epoch checkpoint holds: enough to continue exactly where training left off."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    rng: torch.Tensor | None = None  # torch's global CPU RNG state (dropout), at the end of `epoch`
    rng_cuda: torch.Tensor | None = None  # the CUDA generator's state too, when training on a GPU
    best_val_loss: float = math.inf
    epochs_since_best: int = 0
    train_seconds: float = 0.0
    images: int = 0  # training images processed (for throughput)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_weights: dict[str, torch.Tensor] | None = None  # kept only when early stopping is on


@dataclass
class TrainOutcome:
    status: str  # completed | cancelled | diverged | failed
    state: TrainState
    message: str = ""

    @property
    def model(self) -> Classifier:
        return self.state.model


def cancelled(state: TrainState, epoch_start: float) -> TrainOutcome:
    """Stopped by request (one process's own check, or the ranks' agreement under torchrun): the epoch's time so far
    counts, and the run stays resumable."""
    state.train_seconds += time.perf_counter() - epoch_start
    return TrainOutcome("cancelled", state, f"Stopped by request at step {state.step}.")


def diverged(state: TrainState, epoch_start: float, message: str) -> TrainOutcome:
    state.train_seconds += time.perf_counter() - epoch_start
    return TrainOutcome("diverged", state, message)


def new_state(cfg: TrainConfig, splits: Splits, device: torch.device,
              init_weights: dict[str, torch.Tensor] | None = None) -> TrainState:
    """A fresh model (or one starting from `init_weights`) and optimiser; deterministic for cfg.seed."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, dropout=cfg.dropout, mean=splits.info.mean, std=splits.info.std)
    if init_weights is not None:
        if cfg.transfer != "none":  # a new task: every weight but the output layer's, which keeps its fresh init
            head = head_name(model) + "."
            init_weights = {k: (model.state_dict()[k] if k.startswith(head) else v) for k, v in init_weights.items()}
        model.load_state_dict(init_weights)
    model = place(model, device)
    return TrainState(model=model, optimizer=make_optimizer(cfg, model))


def hard_example_weights(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor,
                         focus: float) -> torch.Tensor:
    """Sampling weight per image, 1 + focus·(1 − p(true class)): what the model gets wrong comes back more."""
    probs = predict_probs(model, images_u8).to(labels.device)
    return 1.0 + focus * (1.0 - probs.gather(1, labels.view(-1, 1)).squeeze(1))


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The run's optimiser over the weights it trains (for a linear probe, the output layer's alone)."""
    params = trainable_parameters(cfg, model)
    # On a GPU one fused kernel updates every weight, with no host sync (DP's wrapped optimiser keeps the default).
    fused = True if params and params[0].is_cuda and not cfg.dp else None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)


def trainable_parameters(cfg: TrainConfig, model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights `cfg` trains; a linear probe (transfer="probe") freezes all but the output layer's."""
    if cfg.transfer != "probe":
        return list(model.parameters())
    head = model.get_submodule(head_name(model))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return list(head.parameters())


def set_train_mode(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Training mode; a linear probe keeps its frozen features in eval mode (BatchNorm statistics stay put)."""
    if cfg.transfer == "probe":
        model.eval()
        model.get_submodule(head_name(model)).train()
    else:
        model.train()


def training_splits(cfg: TrainConfig, splits: Splits, drawings_root: Path | None = None,
                    drawings: DrawingImages | None = None) -> Splits:
    """The images `cfg` trains on: the first `train_size` (or `per_class` of each class), plus the validation
    split with `train_on_val`, plus the drawing set's train half `drawings_factor` times (never its held-out half),
    all `repeat` times over. The set is read from the drawing store at `drawings_root` unless given as `drawings`."""
    splits = splits.limit_train(cfg.train_size)
    if cfg.per_class:
        splits = splits.per_class(cfg.per_class, cfg.seed)
    splits = splits.with_val_in_train() if cfg.train_on_val else splits
    if cfg.drawings:
        part = drawings if drawings is not None else drawing_train_part(cfg, drawings_root)
        splits = splits.with_extra_train(part.x, part.y, cfg.drawings_factor)
    return splits.repeated(cfg.repeat)


def drawing_train_part(cfg: TrainConfig, root: Path | None = None) -> DrawingImages:
    """The train half of `cfg.drawings` as uint8 images (round(model input × 255)) and labels."""
    sets = DrawingStore(root)
    return drawing_images(sets, sets.resolve(cfg.drawings).id, "train")


def adversarial_settings(cfg: TrainConfig) -> AttackSettings:
    """The attack that builds each training batch: FGSM from a random start with step 1.25·ε (Wong et al.,
    "Fast is better than free"), or PGD with `adv_steps` steps of 2.5·ε/steps."""
    if cfg.adversarial == "fgsm":
        return AttackSettings("fgsm", cfg.adv_eps, 1, step=1.25 * cfg.adv_eps, random_start=True)
    return AttackSettings("pgd", cfg.adv_eps, cfg.adv_steps)


def train(cfg: TrainConfig, splits: Splits, *, device: torch.device | None = None,
          on_event: Callable[[Event], None] = lambda e: None,
          should_stop: Callable[[], bool] = lambda: False,
          save_state: Callable[[TrainState], None] = lambda s: None,
          resume: TrainState | None = None, init_weights: dict[str, torch.Tensor] | None = None,
          drawings_root: Path | None = None, ranks: Ranks | None = None) -> TrainOutcome:
    """Train `cfg.model` on `splits.train_*`, validating on `splits.val_*` after every epoch.

    `init_weights` starts from a trained model (fine-tuning); with `cfg.focus_errors` the images that
    model finds hard are over-sampled. With `cfg.dp` it trains with DP-SGD and every epoch row carries `epsilon`.
    With `cfg.drawings` the set's train half (from the drawing store at `drawings_root`, default $DIGIT_LAB_HOME)
    joins the training images. Under torchrun (`ranks`, core.training.distributed) every rank trains on its shard of
    each batch through DistributedDataParallel; figures (loss, accuracy, images) are the whole batch's.
    The process's C allocator keeps freed memory for the next step from here on (core.training.allocator).
    Each step's loss and accuracy stay on the device until they are read back, every step on a CPU and every
    READ_BACK_EVERY steps on a GPU (core.training.readback), so a GPU's step loop never waits for the host. On a GPU
    the full-size batches of an Adam or AdamW run are replayed from one CUDA graph (core.training.graphs).
    """
    keep_freed_memory()
    with contextlib.ExitStack() as cleanup:  # DP's per-image gradient hooks come off the model however we leave
        return _train(cfg, splits, cleanup, device=device, on_event=on_event, should_stop=should_stop,
                      save_state=save_state, resume=resume, init_weights=init_weights, drawings_root=drawings_root,
                      ranks=ranks)


def _train(cfg: TrainConfig, splits: Splits, cleanup: contextlib.ExitStack, *, device: torch.device | None,
           on_event: Callable[[Event], None], should_stop: Callable[[], bool],
           save_state: Callable[[TrainState], None], resume: TrainState | None,
           init_weights: dict[str, torch.Tensor] | None, drawings_root: Path | None,
           ranks: Ranks | None = None) -> TrainOutcome:
    device = device or (ranks.device if ranks else pick_device(cfg.device))
    drawings = drawing_train_part(cfg, drawings_root) if cfg.drawings else None  # read once: plan and data agree
    run = plan(cfg, {**splits.sizes(), **({"drawings": len(drawings.y)} if drawings is not None else {})})
    splits = training_splits(cfg, splits, drawings=drawings)
    state = resume or new_state(cfg, splits, device, init_weights)
    weights = None
    if cfg.focus_errors and init_weights is not None:
        start = build_model(cfg.model, mean=splits.info.mean, std=splits.info.std)
        start.load_state_dict(init_weights)
        weights = hard_example_weights(start.to(device), splits.train_x, splits.train_y, cfg.focus_errors)
    if resume is not None and resume.rng is not None:
        torch.set_rng_state(resume.rng)
    if resume is not None and resume.rng_cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(resume.rng_cuda, device)
    model, optimizer = state.model, state.optimizer
    n_train, per_epoch, total_steps = run.train_images, run.steps_per_epoch, run.total_steps
    chance_loss = math.log(len(splits.info.classes))  # cross-entropy of a uniform guess
    precision = resolve_precision(cfg, device)
    every = read_back_every(device)
    use_bf16 = precision == "bf16"
    attack = adversarial_settings(cfg) if cfg.adversarial != "none" else None
    private, forward = None, model
    if cfg.dp:
        from core.training.privacy import private_training  # Opacus loads only for private runs

        if resume is not None:  # the accountant's history is not in the checkpoint: refuse rather than misreport ε
            raise ConfigError("A differentially private run cannot resume: the privacy spent so far is not in its "
                              "checkpoint, so ε would be reported wrong. Start it again.", field="dp")
        private = cleanup.enter_context(private_training(cfg, model, optimizer, n_train, total_steps, device))
        forward, optimizer = private.module, private.optimizer  # Poisson batches of q·N images on average
    if ranks is not None:
        if cfg.dp:
            raise ConfigError("Differentially private training runs in one process; start it without torchrun.",
                              field="dp")
        if cfg.batch_size < ranks.world:
            raise ConfigError(f"A batch of {cfg.batch_size} cannot be split over {ranks.world} processes.",
                              field="batch_size")
        forward = ranks.wrap(model)

    def forward_loss(x: torch.Tensor, y: torch.Tensor, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss (L1 penalty included) and logits. `cache`: autocast may reuse a weight's bf16 copy within
        the forward (not while a CUDA graph records: the copy would outlive the recording)."""
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=cache):
            logits = forward(x)
            loss = (F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing) if len(y)
                    else logits.sum() * 0.0)  # an empty Poisson batch still takes a (noise-only) DP step
        if cfg.l1:
            loss = loss + cfg.l1 * sum(p.abs().sum() for n, p in model.named_parameters() if "weight" in n)
        return loss, logits

    def graph_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A whole step for core.training.graphs: forward, backward, update; its [loss, images right]."""
        loss, logits = forward_loss(x, y, cache=False)
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach(), (logits.argmax(1) == y).sum().to(loss.dtype)])

    graphed = (GraphedStep(graph_step, optimizer, cfg.batch_size, device)
               if graphable(cfg, device, private=private is not None, attacked=attack is not None,
                            distributed=ranks is not None) else None)
    if graphed is not None:
        cleanup.callback(graphed.release)
    on_event({"type": "started", "epoch": state.epoch, "step": state.step, "total_steps": total_steps,
              "steps_per_epoch": per_epoch, "epochs": cfg.epochs, "device": str(device), "precision": precision,
              "cuda_graph": graphed is not None, "train_size": n_train, "resumed": resume is not None,
              **({"noise_multiplier": private.noise_multiplier, "sample_rate": private.sample_rate} if private else {})})

    for epoch in range(state.epoch, cfg.epochs):
        # Per-epoch generator: shuffling and augmentation depend only on (seed, epoch), so a run
        # resumed at an epoch boundary sees exactly the batches an uninterrupted run would.
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch)
        order = (torch.multinomial(weights, n_train, replacement=True, generator=gen) if weights is not None
                 else torch.randperm(n_train, device=device, generator=gen))
        set_train_mode(cfg, model)
        epoch_start, epoch_loss, epoch_correct, epoch_seen = time.perf_counter(), 0.0, 0, 0
        pending: list[PendingStep] = []  # steps whose figures are still on the device
        # Steps read back and judged, as (event, images so far): reported once their update is done
        judged: list[tuple[Event, int]] = []

        def read_back() -> TrainOutcome | None:
            """Bring the pending steps' figures to the host (one sync) and judge them in order; a step that passes
            joins the epoch's figures and `judged`."""
            nonlocal epoch_loss, epoch_correct, epoch_seen
            rows, stopping = step_figures(pending, ranks, ranks is not None and should_stop())
            steps, pending[:] = list(pending), []
            if stopping:  # a rank was asked to stop: every rank stops here, before the latest step's update (torchrun
                # never replays graphed steps, whose update would already be done)
                steps, rows = steps[:-1], rows[:-1]
            for step, (loss_value, seen, correct) in zip(steps, rows):
                if not math.isfinite(loss_value):
                    return diverged(state, epoch_start, (
                        f"Training diverged at step {step.number} (epoch {epoch + 1}): the loss became "
                        f"{loss_value} with learning rate {step.lr:.3g}. Lower the learning rate."))
                if epoch_seen >= DIVERGENCE_WINDOW * cfg.batch_size or step.batch == per_epoch - 1:
                    mean_loss = (epoch_loss + loss_value * seen) / max(epoch_seen + seen, 1)
                    if mean_loss > DIVERGENCE_FACTOR * chance_loss:  # finite, but far worse than guessing: blown up
                        return diverged(state, epoch_start, (
                            f"Training diverged in epoch {epoch + 1}: the loss averaged {mean_loss:.1f}, more than "
                            f"{DIVERGENCE_FACTOR}× the {chance_loss:.2f} of guessing at random, with learning rate "
                            f"{step.lr:.3g}. Lower the learning rate."))
                epoch_seen += seen
                epoch_loss += loss_value * seen
                epoch_correct += correct
                judged.append(({"type": "step", "epoch": epoch + 1, "step": step.number, "total_steps": total_steps,
                                "loss": loss_value, "lr": step.lr}, epoch_seen))
            return cancelled(state, epoch_start) if stopping else None

        def report() -> None:
            """Send the judged steps' events. Images/s the same way the run's record computes it (images over the
            loop's wall time, data and augmentation included, validation excluded): live and stored figures agree."""
            elapsed = max(time.perf_counter() - epoch_start, 1e-9)
            for event, seen in judged:
                on_event({**event, "images_per_second": seen / elapsed})
            judged.clear()

        for batch in range(per_epoch):
            if state.step >= total_steps:
                break
            if ranks is None and should_stop():  # under torchrun the ranks agree on stopping when they read back
                verdict = read_back()  # the steps taken since the last read
                report()
                return verdict or cancelled(state, epoch_start)
            idx = private.sample(n_train, gen) if private else order[batch * cfg.batch_size:(batch + 1) * cfg.batch_size]
            images = len(idx)  # the whole batch's, before a rank takes its shard
            if ranks is not None:
                idx = ranks.shard(idx)
            x, y = to_float(splits.train_x[idx]), splits.train_y[idx]
            if cfg.augment:
                x = augment_batch(x, gen, rotate_deg=cfg.rotate_deg, scale=cfg.scale,
                                  translate_px=cfg.translate_px, erase_prob=cfg.erase_prob, stroke=cfg.stroke)
            if attack is not None:  # the model learns on the attacked batch (attacked in train mode, as Wong et al.)
                x = perturb(model, x, y, attack, generator=gen, eval_mode=False)
            lr = lr_at(cfg, state.step, total_steps, per_epoch)
            loss = None  # a graphed step's update is already done when its figures come back
            if graphed is not None and graphed.fits(x):  # forward, backward and update replayed as one graph
                figures = graphed(x, y, lr)
                pending.append(PendingStep(state.step + 1, batch, lr, figures[0], figures[1], len(y)))
                if graphed.failure:  # this step's recording failed; later steps never come back here
                    on_event({"type": "warning", "message": f"Training goes on without a CUDA graph, step by step "
                                                            f"(recording one failed: {graphed.failure})."})
            else:
                set_lr(optimizer, lr)
                loss, logits = forward_loss(x, y)
                pending.append(PendingStep(state.step + 1, batch, lr, loss.detach(), (logits.argmax(1) == y).sum(),
                                           len(y)))
            # Judged before an ordinary step's update, so with `every` 1 a diverged step never reaches the weights.
            if len(pending) >= every or batch == per_epoch - 1 or state.step + 1 >= total_steps:
                if (verdict := read_back()) is not None:
                    report()  # the steps before the one it stopped at were all taken
                    return verdict
            if loss is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            state.step += 1
            state.images += images
            report()

        state.train_seconds += time.perf_counter() - epoch_start
        val = evaluate(model, splits.val_x, splits.val_y)
        row = {"epoch": epoch + 1, "step": state.step, "train_loss": epoch_loss / max(epoch_seen, 1),
               "train_accuracy": epoch_correct / max(epoch_seen, 1), "val_loss": val.loss,
               "val_accuracy": val.accuracy, "lr": lr_at(cfg, max(state.step - 1, 0), total_steps, per_epoch),
               "seconds": state.train_seconds}
        if private:  # the privacy spent so far, for the live chart and the run's record
            row["epsilon"] = private.epsilon()
        state.history.append(row)
        state.epoch = epoch + 1
        improved = val.loss < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, val.loss)
        state.epochs_since_best = 0 if improved else state.epochs_since_best + 1
        if cfg.patience and improved:
            state.best_weights = copy.deepcopy(model.state_dict())
        state.rng = torch.get_rng_state()
        state.rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        shown = slice(0, PREVIEW_IMAGES)
        on_event({"type": "epoch", **row, "preview": {  # a few validation images' current predictions
            "label": val.labels[shown].tolist(), "pred": val.predictions[shown].tolist(),
            "confidence": val.probs[shown].max(1).values.tolist()}})
        save_state(state)
        if cfg.patience and state.epochs_since_best >= cfg.patience:
            on_event({"type": "early_stop", "epoch": epoch + 1, "patience": cfg.patience})
            break
        if state.step >= total_steps:
            break

    if cfg.patience and state.best_weights is not None:
        model.load_state_dict(state.best_weights)  # early stopping keeps the best validation epoch
    return TrainOutcome("completed", state)

"""The per-epoch resume checkpoint: a training state to and from our safetensors files.

`save_state(folder, state, model_name)` / `load_state(folder, cfg, device)` keep model, optimiser, RNG
and progress, split into tensors (`checkpoint-<epoch>.safetensors`) and plain values (`checkpoint.json`,
the pointer); the previous epoch's file is kept until a newer one is committed. Nothing is pickled. One
model's final weights are saved and loaded by core.inference.weights.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from core.training.config import TrainConfig
from core.errors import CheckpointError
from core.storage import atomic_write_json, load_tensors, save_tensors
from core.training.devices import place
from core.training.train import TrainState, make_optimizer
from core.inference.weights import model_from_tensors

log = logging.getLogger(__name__)
POINTER = "checkpoint.json"  # names the current checkpoint file, its sha256 and the previous one
LEGACY_FILE = "checkpoint.safetensors"  # the one file of runs saved before checkpoints were numbered by epoch


# -- resume checkpoints --------------------------------------------------------------------------
def save_state(folder: Path, state: TrainState, model_name: str) -> None:
    """Write `checkpoint-<epoch>.safetensors`, then point `checkpoint.json` at it, then drop older files.

    Every step is atomic and the pointer also names the previous epoch's file (kept), so a crash at any point
    leaves the previous or the new checkpoint loadable.
    """
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in state.model.state_dict().items()}
    opt = state.optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain_state.setdefault(str(idx), {})[key] = value
    if state.rng is not None:
        tensors["rng"] = state.rng
    if state.rng_cuda is not None:
        tensors["rng_cuda"] = state.rng_cuda
    for k, v in (state.best_weights or {}).items():
        tensors[f"best.{k}"] = v
    name = f"checkpoint-{state.epoch}.safetensors"
    previous = _previous_entry(folder, name, state.epoch)
    sha = save_tensors(folder / name, tensors, {"kind": "checkpoint", "model": model_name})
    atomic_write_json(folder / POINTER, {
        "file": name, "sha256": sha, "epoch": state.epoch, "step": state.step,
        "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        "epochs_since_best": state.epochs_since_best, "train_seconds": state.train_seconds,
        "images": state.images, "history": state.history, "optimizer_param_groups": [
            {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in group.items()}  # a graphed run's lr
            for group in opt["param_groups"]],
        "optimizer_plain_state": plain_state, "previous": previous,
    })
    keep = {name, previous["file"]} if previous else {name}
    for path in [*folder.glob("checkpoint*.safetensors"), *folder.glob(".checkpoint*.tmp")]:
        if path.name not in keep:  # older epochs, and temp files a killed writer left behind
            path.unlink(missing_ok=True)


def load_state(folder: Path, cfg: TrainConfig, device: torch.device) -> tuple[TrainState, str]:
    """Rebuild the `TrainState` saved by `save_state` for `cfg`, on `device`, with a note ('' when none).

    When the latest checkpoint file is missing or damaged, the previous epoch's is loaded instead and the note
    says so in a sentence. Runs saved before epoch-numbered files (`checkpoint.safetensors`) load as they are.
    """
    marker = Path(folder) / POINTER
    if not marker.is_file():
        raise CheckpointError("This run has no completed epoch to resume from.")
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"The run's checkpoint record {POINTER} is damaged ({error}); start the run "
                              "again.") from error
    try:
        return _restore(Path(folder), info, cfg, device), ""
    except CheckpointError as error:
        previous = info.get("previous")
        if not previous:
            raise
        log.warning("checkpoint of epoch %s not loaded: %s", info["epoch"], error)
        try:
            state = _restore(Path(folder), previous, cfg, device)
        except CheckpointError as second:
            raise CheckpointError(f"Neither the checkpoint of epoch {info['epoch']} nor that of epoch "
                                  f"{previous['epoch']} could be loaded: {second}") from error
    return state, (f"The checkpoint of epoch {info['epoch']} was missing or damaged; resumed from epoch "
                   f"{previous['epoch']}.")


def _previous_entry(folder: Path, name: str, epoch: int) -> dict[str, Any] | None:
    """The pointer's current entry (without its own `previous`), to be kept as the previous checkpoint.

    When the current entry names the file about to be rewritten (an epoch re-run after falling back), its
    previous one is kept instead; an entry from a later epoch (an earlier attempt) is not kept.
    """
    try:
        info = json.loads((folder / POINTER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for entry in (info, info.get("previous")):
        if entry and _file(entry) != name and entry.get("epoch", epoch) < epoch and (folder / _file(entry)).is_file():
            return {**{k: v for k, v in entry.items() if k != "previous"}, "file": _file(entry)}
    return None


def _file(entry: dict[str, Any]) -> str:
    return entry.get("file", LEGACY_FILE)


def _restore(folder: Path, info: dict[str, Any], cfg: TrainConfig, device: torch.device) -> TrainState:
    """The `TrainState` of one pointer entry: its safetensors file (checked against its sha256) and plain fields."""
    tensors, meta = load_tensors(folder / _file(info), info["sha256"])
    if meta.get("model") != cfg.model:
        raise CheckpointError(f"The checkpoint is for {meta.get('model')!r}, not {cfg.model!r}.")
    model = place(model_from_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, cfg.model,
                                     source="checkpoint", dropout=cfg.dropout), device)
    optimizer = make_optimizer(cfg, model)
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, slot = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[slot] = value.to(device) if slot != "step" else value
    for idx, slots in info["optimizer_plain_state"].items():
        opt_state.setdefault(int(idx), {}).update(slots)
    groups = info["optimizer_param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        group["fused"] = optimizer.defaults.get("fused")  # the kernel of the device it resumes on, not the saver's
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    for param, slots in optimizer.state.items():  # saved contiguous; back in their weight's layout (channels-last
        for slot, value in slots.items():  # convolutions), which a GPU's fused optimiser requires of them
            if slot != "step" and isinstance(value, torch.Tensor) and value.shape == param.shape:
                slots[slot] = torch.empty_like(param).copy_(value)
    best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} or None
    return TrainState(model=model, optimizer=optimizer, epoch=info["epoch"], step=info["step"],
                      rng=tensors.get("rng"), rng_cuda=tensors.get("rng_cuda"),
                      train_seconds=info["train_seconds"], images=info["images"],
                      best_val_loss=info["best_val_loss"] if info["best_val_loss"] is not None else math.inf,
                      epochs_since_best=info["epochs_since_best"], history=info["history"], best_weights=best)

"""The per-epoch resume checkpoint: a training state to and from our safetensors files.

`save_state(folder, state, model_name)` / `load_state(folder, cfg, device)` keep model, optimiser, RNG
and progress, split into tensors (safetensors) and plain values (JSON). Nothing is pickled. One model's
final weights are saved and loaded by core.inference.weights.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from core.training.config import TrainConfig
from core.errors import CheckpointError
from core.storage import atomic_write_json, load_tensors, save_tensors
from core.training.train import TrainState, make_optimizer
from core.inference.weights import model_from_tensors


# -- resume checkpoints --------------------------------------------------------------------------
def save_state(folder: Path, state: TrainState, model_name: str) -> None:
    """Write `checkpoint.safetensors`, then `checkpoint.json` (the commit marker, with the sha256)."""
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
    sha = save_tensors(folder / "checkpoint.safetensors", tensors, {"kind": "checkpoint", "model": model_name})
    atomic_write_json(folder / "checkpoint.json", {
        "sha256": sha, "epoch": state.epoch, "step": state.step,
        "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        "epochs_since_best": state.epochs_since_best, "train_seconds": state.train_seconds,
        "images": state.images, "history": state.history, "optimizer_param_groups": opt["param_groups"],
        "optimizer_plain_state": plain_state,
    })


def load_state(folder: Path, cfg: TrainConfig, device: torch.device) -> TrainState:
    """Rebuild the `TrainState` saved by `save_state` for `cfg`, on `device`."""
    marker = folder / "checkpoint.json"
    if not marker.is_file():
        raise CheckpointError("This run has no completed epoch to resume from.")
    info = json.loads(marker.read_text())
    tensors, meta = load_tensors(folder / "checkpoint.safetensors", info["sha256"])
    if meta.get("model") != cfg.model:
        raise CheckpointError(f"The checkpoint is for {meta.get('model')!r}, not {cfg.model!r}.")
    model = model_from_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, cfg.model,
                               source="checkpoint", dropout=cfg.dropout).to(device)
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
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} or None
    return TrainState(model=model, optimizer=optimizer, epoch=info["epoch"], step=info["step"],
                      rng=tensors.get("rng"), rng_cuda=tensors.get("rng_cuda"),
                      train_seconds=info["train_seconds"], images=info["images"],
                      best_val_loss=info["best_val_loss"] if info["best_val_loss"] is not None else math.inf,
                      epochs_since_best=info["epochs_since_best"], history=info["history"], best_weights=best)

"""Models and training states to and from our safetensors files, with their shapes checked.

`save_model(path, model, name)` / `load_model(path)` for final weights; `save_state` / `load_state`
for the per-epoch resume checkpoint (model, optimiser, RNG, progress), split into tensors
(safetensors) and plain values (JSON). Nothing is pickled.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from core.config import TrainConfig
from core.errors import CheckpointError
from core.models import ZOO, Classifier, build_model
from core.storage import atomic_write_json, load_tensors, save_tensors
from core.train import TrainState, make_optimizer


def save_model(path: Path, model: Classifier, model_name: str, extra: dict[str, str] | None = None) -> str:
    """Write final weights; returns their sha256 for the sidecar."""
    return save_tensors(path, dict(model.state_dict()), {"kind": "weights", "model": model_name, **(extra or {})})


def load_model(path: Path, expected_sha256: str | None = None, device: torch.device | str = "cpu") -> Classifier:
    """An eval-mode model from one of our weights files (zoo name from the file's header)."""
    tensors, meta = load_tensors(path, expected_sha256)
    model = model_from_tensors(tensors, meta.get("model", ""), source=Path(path).name)
    return model.to(device).eval()


def model_from_tensors(tensors: dict[str, torch.Tensor], model_name: str, source: str = "weights",
                       dropout: float = 0.0) -> Classifier:
    if model_name not in ZOO:
        raise CheckpointError(f"{source} names model {model_name!r}, which is not in the zoo "
                              f"({', '.join(ZOO)}).")
    mean = tensors.get("normalize.mean", torch.tensor([0.1307]))
    std = tensors.get("normalize.std", torch.tensor([0.3081]))
    model = build_model(model_name, dropout=dropout, mean=float(mean.flatten()[0]), std=float(std.flatten()[0]))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            ", ".join(f"{k} is {tuple(tensors[k].shape)} not {tuple(expected[k].shape)}" for k in wrong[:3]),
        ) if part)
        raise CheckpointError(f"{source} does not fit model {model_name!r}: {detail}.")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source} holds non-finite values in {', '.join(bad[:3])}; refused.")
    model.load_state_dict(tensors)
    return model


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

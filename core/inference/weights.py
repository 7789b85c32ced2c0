"""Model sources — a run, a weights file, the shipped starter — and saving and loading one model's weights.

`src = model_source(store, "starter" | run id | path/to/file.safetensors)`; `model = load_source(src)`.
Inference, evaluation, fine-tuning and the CLI all resolve models here, so a missing model reads the same
everywhere. Weights are tagged safetensors checked against their checksum; nothing is unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.datasets import DATASETS
from core.errors import CheckpointError
from core.models.zoo import ZOO, Classifier, build_model
from core.runs import RunRecord, RunStore
from core.storage import load_tensors, read_header, save_tensors

ASSETS = Path(__file__).parents[1] / "assets"  # core/assets
STARTER = "starter"  # the key meaning "the model shipped with the app"
STARTER_WEIGHTS = ASSETS / "starter.safetensors"
STARTER_CARD = ASSETS / "starter.json"  # sidecar: sha256, config, metrics, training data
STARTER_MISSING = "The starter model is missing; run `python scripts/train_starter.py`."


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are and what it was trained on."""

    key: str  # run id, "starter", or the weights file's path
    name: str
    model: str  # zoo name
    dataset: str
    weights: Path
    sha256: str | None  # the file's checksum when a sidecar or run records it; else the header's digest is checked
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig it was trained with (as a dict)
    info: dict[str, Any] = field(default_factory=dict)  # metrics and other sidecar fields

    @property
    def classes(self) -> tuple[str, ...]:
        return (DATASETS.get(self.dataset) or DATASETS["mnist"]).classes


def no_weights_message(record: RunRecord) -> str:
    """The one sentence for a run that cannot be used as a model."""
    return f"Run {record.name} is {record.status} and has no saved weights to use."


def model_source(store: RunStore | None, key: str | Path) -> ModelSource:
    """The starter, a weights file (sidecar JSON optional) or a run (by id, unique prefix or name)."""
    if str(key) == STARTER:
        if not STARTER_WEIGHTS.is_file() or not STARTER_CARD.is_file():
            raise CheckpointError(STARTER_MISSING)
        return _from_file(STARTER_WEIGHTS, key=STARTER, default_name="Starter model")
    path = Path(key)
    if path.suffix == ".safetensors" or path.is_file():
        return _from_file(path, key=str(path), default_name=path.stem)
    store = store or RunStore()
    record = store.resolve(str(key))
    if not record.weights_sha256:
        raise CheckpointError(no_weights_message(record))
    return ModelSource(record.id, record.name, record.model, record.dataset, store.weights_path(record.id),
                       record.weights_sha256, record.config, {"run_id": record.id, **record.metrics})


def _from_file(path: Path, *, key: str, default_name: str) -> ModelSource:
    sidecar = path.with_suffix(".json")
    info = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    header = read_header(path)  # also refuses a file that is not ours before anything else
    model = info.get("model") or header.get("model", "")
    dataset = info.get("dataset") or header.get("dataset", "mnist")
    return ModelSource(key, info.get("name", default_name), model, dataset, path, info.get("sha256"),
                       info.get("config", {}), {**info.get("metrics", {}), **{k: v for k, v in info.items()
                                                                                if k in ("drawings", "training_data")}})


def load_source(src: ModelSource, device: torch.device | str = "cpu") -> Classifier:
    """The eval-mode model of a source."""
    return load_model(src.weights, src.sha256, device)


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
    """A zoo model holding `tensors`, after checking names, shapes and that every value is finite."""
    if model_name not in ZOO:
        raise CheckpointError(f"{source} names model {model_name!r}, which is not in the zoo "
                              f"({', '.join(ZOO)}).")
    mean = tensors.get("normalize.mean", torch.tensor([0.1307]))
    std = tensors.get("normalize.std", torch.tensor([0.3081]))
    glow = 0.0
    if "glow.amount" in tensors:  # a model read through a glow (core.models.zoo.Glow): one amount, above 0, below 1
        amount = tensors["glow.amount"]
        glow = float(amount.flatten()[0]) if amount.numel() == 1 else float("nan")
        if not 0.0 < glow < 1.0:  # also refuses NaN
            raise CheckpointError(f"{source} asks to read through a glow of {amount.flatten().tolist()[:3]}; it must "
                                  "be one number above 0 and below 1.")
    model = build_model(model_name, dropout=dropout, mean=float(mean.flatten()[0]), std=float(std.flatten()[0]),
                        glow=glow)
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

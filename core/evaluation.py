"""Evaluation of a stored model (a run or the starter) on a split, cached on disk by weights checksum.

`src = model_source(store, "starter")`; `result = split_predictions(store, src, "test")` returns the
probabilities for every image; later calls read them back from `<store>/cache/` in milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.checkpoint import load_model
from core.data import load_splits
from core.errors import CheckpointError
from core.metrics import EvalResult, evaluate
from core.models import Classifier
from core.predict import STARTER_WEIGHTS
from core.runs import RunStore
from core.storage import load_tensors, save_tensors

STARTER = "starter"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are and what it was trained on."""

    key: str  # run id, or "starter"
    name: str
    model: str  # zoo name
    dataset: str
    weights: Path
    sha256: str
    config: dict  # the TrainConfig it was trained with (as a dict)


def model_source(store: RunStore, key: str) -> ModelSource:
    """The run `key` (or the shipped starter) as a loadable model source."""
    if key == STARTER:
        sidecar = STARTER_WEIGHTS.with_suffix(".json")
        if not sidecar.is_file():
            raise CheckpointError("The starter model is missing; run `python scripts/train_starter.py`.")
        info = json.loads(sidecar.read_text())
        return ModelSource(STARTER, info.get("name", "Starter model"), info["model"], info["dataset"],
                           STARTER_WEIGHTS, info["sha256"], info.get("config", {}))
    record = store.get(key)
    if not record.weights_sha256:
        raise CheckpointError(f"Run {record.name} is {record.status} and has no saved weights.")
    return ModelSource(record.id, record.name, record.model, record.dataset, store.weights_path(record.id),
                       record.weights_sha256, record.config)


def load_source(src: ModelSource) -> Classifier:
    return load_model(src.weights, src.sha256)


def split_predictions(store: RunStore, src: ModelSource, split: str = "test", dataset: str | None = None,
                      model: Classifier | None = None) -> EvalResult:
    """Probabilities of `src` on every image of `split` (cached on disk per weights checksum and data)."""
    dataset = dataset or src.dataset
    cache = store.root / "cache" / f"{src.sha256[:16]}-{dataset}-{split}.safetensors"
    if cache.is_file():
        try:
            tensors, _ = load_tensors(cache)
            return EvalResult.from_probs(tensors["probs"], tensors["labels"])
        except (CheckpointError, KeyError):
            cache.unlink(missing_ok=True)  # a damaged cache is recomputed, never trusted
    splits = load_splits(dataset)
    x, y = {"test": (splits.test_x, splits.test_y), "val": (splits.val_x, splits.val_y),
            "train": (splits.train_x, splits.train_y)}[split]
    result = evaluate(model or load_source(src), x, y)
    save_tensors(cache, {"probs": result.probs, "labels": result.labels}, {"kind": "predictions"})
    return result

"""Retraining on corrected drawings: a fine-tuning config from a model and a drawing set, and its before/after record.

`cfg = retrain_config(store, "starter", "Class 3B", factor=20)`, then `create_run` / `execute_run` (or the job manager)
train it like any run: MNIST plus the set's train half, oversampled, augmented. When it ends, its metrics hold
`drawings_accuracy` (the new model on the set's held-out half) beside `drawings_accuracy_before` (the starting model
on the same drawings), and `test_accuracy` beside `test_accuracy_before`.
"""
from __future__ import annotations

from typing import Any

import torch

from core.data.drawing_parts import images, part_ids
from core.data.drawing_sets import DrawingStore
from core.errors import DigitLabError
from core.inference.drawing_scores import predict_inputs
from core.inference.weights import load_source, model_source
from core.runs import RunStore
from core.data.datasets import DIGIT_DATASETS
from core.training.config import TrainConfig

# Fine-tuning, not training: a tenth of the starter's peak rate, one epoch, the starter's drawing-like augmentation.
RETRAIN_DEFAULTS: dict[str, Any] = dict(optimizer="adamw", lr=4e-4, schedule="cosine", batch_size=128, epochs=1,
                                        augment=True, rotate_deg=15.0, scale=0.15, translate_px=2.5, stroke=0.8)


def retrain_config(store: RunStore, key: str, set_key: str, *, factor: int = 20, **overrides: Any) -> TrainConfig:
    """A run that fine-tunes model `key` (a run or "starter") on its dataset plus drawing set `set_key`'s train half,
    each drawing repeated `factor` times per epoch; `overrides` change any setting."""
    src = model_source(store, key)
    if src.dataset not in DIGIT_DATASETS:
        raise DigitLabError(f"{src.name} was trained on {src.dataset}; only a digit model can learn from a drawing set.")
    found = DrawingStore(store.root).resolve(set_key)
    values = {**RETRAIN_DEFAULTS, "model": src.model, "dataset": src.dataset,
              "dropout": src.config.get("dropout", 0.0), "init_from": src.key, "drawings": found.id,
              "drawings_factor": factor, "extra": {"retrain": True}, **overrides}
    return TrainConfig.from_dict(values)


def drawings_record(store: RunStore, cfg: TrainConfig, model: torch.nn.Module) -> dict[str, float]:
    """The before/after figures of a run trained with a drawing set: sizes of its halves, accuracy of `model` on the
    held-out half, and of the starting model (cfg.init_from) on the same drawings and on the test split."""
    sets = DrawingStore(store.root)
    set_id = sets.resolve(cfg.drawings).id
    held = images(sets, set_id, "heldout")
    record: dict[str, float] = {"drawings_train": len(part_ids(sets, set_id, "train")), "drawings_heldout": len(held.ids)}
    if not held.ids:
        return record
    labels = held.y.numpy()
    record["drawings_accuracy"] = float((predict_inputs(model, held.inputs).argmax(1) == labels).mean())
    if cfg.init_from:
        src = model_source(store, cfg.init_from)
        before = predict_inputs(load_source(src), held.inputs).argmax(1)
        record["drawings_accuracy_before"] = float((before == labels).mean())
        if src.dataset == cfg.dataset and src.info.get("test_accuracy") is not None:
            record["test_accuracy_before"] = float(src.info["test_accuracy"])
    return record

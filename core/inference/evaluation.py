"""Evaluation of a stored model (a run or the starter) on a split, cached on disk by weights checksum.

`result = split_predictions(store, core.inference.weights.model_source(store, "starter"), "test")` returns the
probabilities for every image; later calls read them back from `<store>/cache/` in milliseconds.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch

from core.data.datasets import load_splits
from core.errors import CheckpointError
from core.inference.metrics import EvalResult, evaluate
from core.models.zoo import Classifier
from core.runs import RunStore
from core.storage import load_tensors, save_tensors, sha256_file
from core.inference.weights import ModelSource, load_source


def split_predictions(store: RunStore, src: ModelSource, split: str = "test", dataset: str | None = None,
                      model: Classifier | None = None) -> EvalResult:
    """Probabilities of `src` on every image of `split` (cached on disk per weights checksum and data)."""
    dataset = dataset or src.dataset
    splits = load_splits(dataset)
    x, y = {"test": (splits.test_x, splits.test_y), "val": (splits.val_x, splits.val_y),
            "train": (splits.train_x, splits.train_y)}[split]
    # Keyed by the file's checksum as it is now: predictions kept for weights that were since damaged or replaced
    # are never shown for them (loading the file then says what is wrong with it).
    file_sha256 = sha256_file(src.weights)
    cache = _cache_path(store, file_sha256, dataset, split)
    with _lock_for(cache):  # a second caller (a warm-up, another visitor) waits for the first, then reads its file
        if cache.is_file():
            try:
                tensors, _ = load_tensors(cache)
                if torch.equal(tensors["labels"], y.cpu()):  # the very images, in order (else recomputed)
                    return EvalResult.from_probs(tensors["probs"], tensors["labels"])
            except (CheckpointError, KeyError):
                pass
            cache.unlink(missing_ok=True)  # a damaged or foreign cache is recomputed, never trusted
        _progress[cache] = (0, len(y))
        try:
            result = evaluate(model or load_source(src), x, y,
                              progress=lambda done, total: _progress.__setitem__(cache, (done, total)))
            remember_predictions(store, file_sha256, dataset, split, result)
        finally:
            _progress.pop(cache, None)
        return result


def pending_predictions(store: RunStore, src: ModelSource, split: str = "test", dataset: str | None = None,
                        file_sha256: str | None = None) -> tuple[int, int] | None:
    """None when `split_predictions` can answer from its disk cache now; else how far their computation has come,
    (images done, images in all), which is (0, 0) when nobody in this process is computing them yet.
    `file_sha256`: the weights file's checksum, when the caller has just computed it."""
    cache = _cache_path(store, file_sha256 or sha256_file(src.weights), dataset or src.dataset, split)
    progress = _progress.get(cache)
    if progress is None and cache.is_file():
        return None
    return progress or (0, 0)


def remember_predictions(store: RunStore, weights_sha256: str, dataset: str, split: str, result: EvalResult) -> None:
    """Keep a model's probabilities on a whole split for `split_predictions` (a run does this as it finishes, so
    Evaluate opens on it at once)."""
    save_tensors(_cache_path(store, weights_sha256, dataset, split),
                 {"probs": result.probs, "labels": result.labels}, {"kind": "predictions"})


_locks: dict[Path, threading.Lock] = {}
_progress: dict[Path, tuple[int, int]] = {}  # cache file -> (images done, in all) while split_predictions computes it
_locks_guard = threading.Lock()


def _lock_for(cache: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(cache, threading.Lock())


def _cache_path(store: RunStore, weights_sha256: str, dataset: str, split: str) -> Path:
    return store.root / "cache" / f"{weights_sha256[:16]}-{dataset}-{split}.safetensors"

"""A drawing set as a dataset: its train and held-out halves, and its drawings as tensors.

`images(sets, set_id, "heldout")` gives uint8 N×28×28 images and labels, like core.data.datasets.Splits; `part_ids`
says which drawings a part holds. The halves depend on the drawings' images only, so they survive export and import.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from core.data.datasets import DATASETS, Splits
from core.data.drawing_sets import SIZE, DrawingStore
from core.errors import DrawingSetError

SPLIT_SEED = 0  # the train / held-out split retraining uses; fixed, so "held out" means the same drawings every time
PARTS = ("all", "train", "heldout")


@dataclass(frozen=True)
class DrawingImages:
    """A set (or one part of it) as a dataset: uint8 images like core.data.datasets.Splits, and labels."""

    x: torch.Tensor  # uint8 (N, 28, 28): round(model input × 255)
    y: torch.Tensor  # int64 (N,)
    ids: list[int]  # drawing ids, in the same order
    inputs: np.ndarray  # float32 (N, 28, 28): the exact model inputs


def split_ids(rows: Iterable[tuple[int, int, str]], seed: int = SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Deterministic halves of (id, label, digest) rows: (train ids, held-out ids), stratified by label.

    Within each label the distinct images are ordered by sha256(seed, their model input), and every second one is held
    out (a label with one image trains). Copies of one image (saved twice, or a set imported into itself) stay
    together on one side, so the held-out half never holds an image the train half has; a copy relabelled goes with
    the label its first drawing has. The order depends on the images only, so a set exported and imported again
    splits the same way, and adding drawings leaves most earlier ones on their side.
    """
    copies: dict[str, list[int]] = {}  # digest -> the ids of the drawings with that image, first drawing first
    first_label: dict[str, int] = {}
    for drawing_id, label, digest in sorted(rows):
        copies.setdefault(digest, []).append(drawing_id)
        first_label.setdefault(digest, label)
    by_label: dict[int, list[tuple[str, str]]] = {}
    for digest, label in first_label.items():
        by_label.setdefault(label, []).append((hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest(), digest))
    train, held = [], []
    for label in sorted(by_label):
        ordered = [digest for _, digest in sorted(by_label[label])]
        train += [i for digest in ordered[0::2] for i in copies[digest]]
        held += [i for digest in ordered[1::2] for i in copies[digest]]
    return sorted(train), sorted(held)


def part_ids(sets: DrawingStore, set_id: str, part: str = "all", seed: int = SPLIT_SEED) -> list[int]:
    """The ids of a set's drawings in `part`: all, train (the half retraining uses) or heldout (never trained on)."""
    if part not in PARTS:
        raise DrawingSetError(f"A part of a drawing set is one of {', '.join(PARTS)} (got {part!r}).")
    rows = sets.labels_and_digests(set_id)
    if part == "all":
        return [r[0] for r in rows]
    train, held = split_ids(rows, seed)
    return train if part == "train" else held


def images(sets: DrawingStore, set_id: str, part: str = "all", seed: int = SPLIT_SEED) -> DrawingImages:
    """A set's drawings (or one part) as uint8 N×28×28 images and int64 labels, in the order they were saved."""
    wanted = set(part_ids(sets, set_id, part, seed))
    chosen = [d for d in sets.drawings(set_id) if d.id in wanted]
    inputs = np.stack([d.model_input for d in chosen]) if chosen else np.empty((0, SIZE, SIZE), np.float32)
    x = torch.from_numpy(np.round(inputs * 255).astype(np.uint8))
    y = torch.tensor([d.label for d in chosen], dtype=torch.int64)
    return DrawingImages(x, y, [d.id for d in chosen], inputs)


def as_splits(sets: DrawingStore, set_id: str) -> Splits:
    """A set as a dataset whose test split is the whole set (train and validation empty), for Evaluate and Explain."""
    data = images(sets, set_id)
    empty_x, empty_y = torch.empty((0, SIZE, SIZE), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
    return Splits(DATASETS["mnist"], empty_x, empty_y, empty_x, empty_y, data.x, data.y)


def train_part_size(set_key: str, root: Path | str | None = None) -> int:
    """Drawings in a set's train part (0 when the set does not exist): what a run's plan counts."""
    sets = DrawingStore(root)
    found = sets.find(set_key)
    return len(part_ids(sets, found.id, "train")) if found else 0

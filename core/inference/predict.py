"""Predictions for drawings, uploads and arrays, from a run, a weights file, the starter, or an ensemble.

`p = Predictor.starter().predict(canvas_rgba)` gives `p.label`, `p.confidence`, `p.probs` and
`p.model_input` (the 28×28 image the model saw); `Predictor.ensemble([...])` averages probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from core.data.datasets import DATASETS
from core.errors import CheckpointError
from core.models.zoo import Classifier
from core.data.preprocess import to_model_input
from core.runs import RunStore
from core.inference.weights import STARTER, ModelSource, load_source, model_source



@dataclass(frozen=True)
class Prediction:
    probs: np.ndarray  # (10,) probabilities summing to 1
    model_input: np.ndarray  # (28, 28) float32 in [0, 1]: what the model saw
    classes: tuple[str, ...]

    @property
    def label(self) -> int:
        return int(self.probs.argmax())

    @property
    def confidence(self) -> float:
        return float(self.probs.max())

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(int(i), float(self.probs[i])) for i in order]


class Predictor:
    """One model or several (probabilities averaged), ready to read images."""

    def __init__(self, models: Sequence[Classifier], names: Sequence[str], classes: Sequence[str] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        if not models:
            raise ValueError("A predictor needs at least one model.")
        self.models = [m.eval() for m in models]
        self.names = list(names)
        self.classes = tuple(classes or DATASETS["mnist"].classes)
        self.info = info or {}

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, key: str | Path, store: RunStore | None = None) -> "Predictor":
        """From "starter", a run (id, unique prefix or name in `store`) or a path to one of our .safetensors files."""
        return cls.from_source(model_source(store, key))

    @classmethod
    def from_source(cls, src: ModelSource) -> "Predictor":
        return cls([load_source(src)], [src.name], src.classes, {"key": src.key, "sha256": src.sha256, **src.info})

    @classmethod
    def starter(cls) -> "Predictor":
        """The model shipped with the app (trained by scripts/train_starter.py)."""
        return cls.load(STARTER)

    @classmethod
    def ensemble(cls, predictors: Sequence["Predictor"]) -> "Predictor":
        """Average the probabilities of several predictors (they must share their classes)."""
        if len({p.classes for p in predictors}) > 1:
            raise CheckpointError("An ensemble needs models trained on the same dataset.")
        return cls([m for p in predictors for m in p.models], [n for p in predictors for n in p.names],
                   predictors[0].classes)

    # -- prediction ------------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 10) probabilities for model inputs (N, 28, 28) in [0, 1]."""
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32)).unsqueeze(1)
        probs = sum(torch.softmax(m(x.to(_device(m))).float(), dim=1).cpu() for m in self.models) / len(self.models)
        return probs.numpy()

    def predict(self, image: Any) -> Prediction:
        """Read one image: RGBA canvas, RGB/greyscale array or PIL image (see core.data.preprocess)."""
        return self.predict_prepared(to_model_input(image))

    def predict_prepared(self, model_input: np.ndarray) -> Prediction:
        """Predict for an image already in model form (28×28 in [0, 1]), e.g. a test-set image."""
        model_input = np.asarray(model_input, dtype=np.float32)
        return Prediction(self.probabilities(model_input[None])[0], model_input, self.classes)

    def predict_batch(self, images: Sequence[Any], batch_size: int = 512) -> list[Prediction]:
        inputs = np.stack([to_model_input(im) for im in images]) if len(images) else np.empty((0, 28, 28))
        probs = np.concatenate([self.probabilities(inputs[i:i + batch_size])
                                for i in range(0, len(inputs), batch_size)]) if len(inputs) else np.empty((0, 10))
        return [Prediction(p, x, self.classes) for p, x in zip(probs, inputs)]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device

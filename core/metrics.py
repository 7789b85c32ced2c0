"""Model evaluation on a split: loss, accuracy and the per-image probabilities behind them.

`evaluate(model, images_u8, labels)` runs the model in eval mode in batches, without gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.data import to_float


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy (no label smoothing)
    accuracy: float  # fraction correct, 0..1
    n: int
    probs: torch.Tensor  # (n, 10) softmax probabilities, on the CPU
    labels: torch.Tensor  # (n,) true labels, on the CPU

    @property
    def predictions(self) -> torch.Tensor:
        return self.probs.argmax(1)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N, 10) on the CPU for uint8 images (N, 28, 28) on the model's device."""
    was_training = model.training
    model.eval()
    out = [F.softmax(model(to_float(images_u8[i:i + batch_size])).float(), dim=1).cpu()
           for i in range(0, len(images_u8), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def evaluate(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> EvalResult:
    """Loss and accuracy of `model` on the given images."""
    probs = predict_probs(model, images_u8, batch_size)
    labels = labels.cpu()
    if len(labels) == 0:
        return EvalResult(float("nan"), float("nan"), 0, probs, labels)
    loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels).item()
    accuracy = (probs.argmax(1) == labels).float().mean().item()
    return EvalResult(loss, accuracy, len(labels), probs, labels)

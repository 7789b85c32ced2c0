"""Model evaluation: loss, accuracy, per-class figures, confusion, calibration, reject option, McNemar.

`evaluate(model, images_u8, labels)` gives probabilities; the other functions take numpy probabilities
and labels, so they are cheap to test and to cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from core.data.datasets import to_float


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

    @classmethod
    def from_probs(cls, probs: torch.Tensor, labels: torch.Tensor) -> "EvalResult":
        """Loss and accuracy derived from probabilities (N, 10) and labels (N,), both on the CPU."""
        if len(labels) == 0:
            return cls(float("nan"), float("nan"), 0, probs, labels)
        loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels).item()
        accuracy = (probs.argmax(1) == labels).float().mean().item()
        return cls(loss, accuracy, len(labels), probs, labels)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images_u8: torch.Tensor, batch_size: int = 1000,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Softmax probabilities (N, 10) on the CPU for uint8 images (N, 28, 28) on the model's device; `progress` is
    told (images done, images in all) after each batch."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images_u8), batch_size):
        out.append(F.softmax(model(to_float(images_u8[i:i + batch_size])).float(), dim=1).cpu())
        if progress is not None:
            progress(min(i + batch_size, len(images_u8)), len(images_u8))
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def evaluate(model: torch.nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Loss and accuracy of `model` on the given images (`progress` as for predict_probs)."""
    return EvalResult.from_probs(predict_probs(model, images_u8, batch_size, progress), labels.cpu())


# -- classification figures (sklearn's definitions) ----------------------------------------------------
@dataclass
class ClassReport:
    accuracy: float
    per_class: list[dict[str, float]]  # class, precision, recall, f1, support
    macro: dict[str, float]  # precision, recall, f1
    weighted: dict[str, float]


def class_report(labels: np.ndarray, preds: np.ndarray, n_classes: int = 10) -> ClassReport:
    """Accuracy and per-class / macro / weighted precision, recall and F1 (identical to scikit-learn's). The averages
    are over the classes that occur (as true or predicted labels), as scikit-learn's are by default: nine classes
    with no drawings would otherwise pull a perfect small set's macro F1 down to 0.1."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = list(range(n_classes))
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    per_class = [{"class": c, "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]), "support": int(s[c])}
                 for c in classes]
    averages = {}
    present = sorted(set(np.asarray(labels).tolist()) | set(np.asarray(preds).tolist()))
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, preds, labels=present, average=average,
                                                        zero_division=0)
        averages[average] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    return ClassReport(float(accuracy_score(labels, preds)), per_class, averages["macro"], averages["weighted"])


def confusion(labels: np.ndarray, preds: np.ndarray, n_classes: int = 10, normalize: bool = False) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted; `normalize` divides each row by its total."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, preds, labels=list(range(n_classes)), normalize="true" if normalize else None)


@dataclass
class Calibration:
    bin_edges: np.ndarray  # (bins + 1,)
    confidence: np.ndarray  # mean confidence per bin (nan where empty)
    accuracy: np.ndarray  # accuracy per bin (nan where empty)
    count: np.ndarray  # images per bin
    ece: float  # expected calibration error: sum over bins of |acc - conf| × share of images


def calibration(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Calibration:
    """Reliability diagram data and expected calibration error (equal-width confidence bins)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=bins) / count
        acc = np.bincount(which, weights=correct, minlength=bins) / count
    ece = float(np.nansum(np.abs(acc - conf) * count) / max(len(labels), 1))
    return Calibration(edges, conf, acc, count, ece)


def reject_curve(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> list[dict[str, float]]:
    """For each confidence threshold: share of images answered, accuracy on those, images set aside."""
    thresholds = np.linspace(0.0, 0.99, 34) if thresholds is None else thresholds
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    rows = []
    for t in thresholds:
        kept = confidence >= t
        rows.append({"threshold": float(t), "coverage": float(kept.mean()) if len(kept) else 0.0,
                     "accuracy": float(correct[kept].mean()) if kept.any() else float("nan"),
                     "rejected": int((~kept).sum()), "errors_kept": int((kept & ~correct).sum())})
    return rows


@dataclass
class McNemar:
    only_a: int  # images A gets right and B gets wrong
    only_b: int  # images B gets right and A gets wrong
    p_value: float  # exact two-sided binomial test on the discordant pairs
    significant: bool  # p < 0.05


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test: is the difference between two models on the same images more than chance?"""
    from scipy.stats import binomtest

    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return McNemar(only_a, only_b, p, p < 0.05)

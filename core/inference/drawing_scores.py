"""How models read a drawing set: accuracy, per-class recall, confusion, mistakes, and where to set a threshold.

`score = score_model(store, sets, set_id, "starter")` scores one model (a run id or "starter") on the drawings' exact
model inputs; `score_all(store, sets, set_id)` tabulates every finished run; `lowest_threshold(score.probs,
score.labels, 0.99)` finds the confidence below which the model should say "not sure" to keep 99% accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data.datasets import DIGIT_DATASETS  # runs trained on these read digits; others (fashion-mnist) are left out
from core.data.drawing_parts import images
from core.data.drawing_sets import DrawingStore
from core.errors import DigitLabError, DrawingSetError
from core.inference.metrics import class_report, confusion, reject_curve
from core.inference.weights import ModelSource, load_source, model_source
from core.runs import RunStore



@dataclass
class SetScore:
    key: str  # the model's key: run id or "starter"
    name: str  # the model's name
    set_id: str
    part: str  # all, train or heldout
    n: int
    accuracy: float  # 0..1
    recall: list[float]  # per class 0..9 (0 for a class with no drawings: see support)
    support: list[int]  # drawings per class
    confusion: np.ndarray  # (10, 10) counts, rows = true label, columns = predicted
    mistakes: list[int]  # positions (into ids / labels / probs) of the drawings the model got wrong
    ids: list[int]  # drawing ids, in the set's order
    labels: np.ndarray  # (n,) true labels
    probs: np.ndarray  # (n, 10) probabilities

    @property
    def predictions(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def mistake_ids(self) -> list[int]:
        """The drawing ids of the mistakes."""
        return [self.ids[i] for i in self.mistakes]


@dataclass(frozen=True)
class ThresholdChoice:
    target: float  # the accuracy asked for, 0..1
    threshold: float | None  # the lowest confidence threshold that reaches it; None when none does
    accuracy: float | None  # accuracy on the drawings answered at that threshold
    coverage: float | None  # share of drawings answered (confidence >= threshold)
    message: str  # one sentence saying what was found


@torch.no_grad()
def predict_inputs(model: torch.nn.Module, inputs: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """(N, 10) softmax probabilities for float32 model inputs (N, 28, 28) in [0, 1], as the Draw page reads them."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(inputs[i:i + batch_size]))
                               .unsqueeze(1).to(device)).float(), dim=1).cpu().numpy()
           for i in range(0, len(inputs), batch_size)]
    return np.concatenate(out) if out else np.empty((0, 10), np.float32)


def score_predictions(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, per-class recall and support, confusion and mistakes from probabilities (scikit-learn's definitions)."""
    labels = np.asarray(labels)
    preds = np.asarray(probs).argmax(1)
    report = class_report(labels, preds)
    return {"accuracy": report.accuracy, "recall": [c["recall"] for c in report.per_class],
            "support": [c["support"] for c in report.per_class], "confusion": confusion(labels, preds),
            "mistakes": np.flatnonzero(preds != labels).tolist()}


def score_model(store: RunStore | None, sets: DrawingStore, set_id: str, key: str | ModelSource,
                part: str = "all", model: torch.nn.Module | None = None) -> SetScore:
    """One model (run id, unique prefix, name, "starter" or a weights file) on a set or one part of it."""
    src = key if isinstance(key, ModelSource) else model_source(store, key)
    data = images(sets, set_id, part)
    if not data.ids:
        raise DrawingSetError(f"The drawing set {sets.get_set(set_id).name!r} has no drawings"
                              + ("" if part == "all" else f" in its {part} part") + " to score.")
    probs = predict_inputs(model if model is not None else load_source(src), data.inputs)
    labels = data.y.numpy()
    return SetScore(src.key, src.name, set_id, part, len(labels), ids=data.ids, labels=labels, probs=probs,
                    **score_predictions(probs, labels))


def score_all(store: RunStore, sets: DrawingStore, set_id: str, part: str = "all", include_starter: bool = True,
              statuses: tuple[str, ...] = ("completed",)) -> list[dict]:
    """Every finished run on digits (and the starter) on the set: rows of key, name, model, accuracy, n, best first.

    A run whose weights cannot be read gets a row with accuracy None and the reason in `error`.
    """
    keys = (["starter"] if include_starter else []) + [r.id for s in statuses for r in store.list(status=s)
                                                       if r.dataset in DIGIT_DATASETS]
    rows = []
    for key in keys:
        try:
            src = model_source(store, key)
            score = score_model(store, sets, set_id, src, part)
            rows.append({"key": src.key, "name": src.name, "model": src.model, "accuracy": score.accuracy,
                         "n": score.n, "mistakes": len(score.mistakes), "error": None})
        except DrawingSetError:
            raise  # the set itself is the problem: no row would have figures
        except DigitLabError as error:
            rows.append({"key": key, "name": key, "model": None, "accuracy": None, "n": 0, "mistakes": None,
                         "error": str(error)})
    return sorted(rows, key=lambda r: -1.0 if r["accuracy"] is None else -r["accuracy"])


# -- thresholds ------------------------------------------------------------------------------------------
def threshold_curve(probs: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | None = None) -> list[dict]:
    """Accuracy on the answered drawings and coverage (share answered) at each confidence threshold."""
    return reject_curve(np.asarray(probs), np.asarray(labels), thresholds)


def lowest_threshold(probs: np.ndarray, labels: np.ndarray, target: float = 0.99) -> ThresholdChoice:
    """The lowest confidence threshold at which the drawings the model answers (confidence >= threshold) are at least
    `target` accurate, with the accuracy and coverage there; the candidates are 0 and every confidence seen."""
    if not 0 < target <= 1:
        raise DigitLabError(f"The accuracy to keep must be above 0% and at most 100% (got {target:g}).")
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(labels) == 0:
        return ThresholdChoice(target, None, None, None, "There are no drawings to choose a threshold on.")
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    order = np.argsort(-confidence, kind="stable")  # most confident first: answered sets grow as the threshold falls
    conf_sorted, right = confidence[order], np.cumsum(correct[order])
    # For threshold t = conf_sorted[i], the answered drawings are all those with confidence >= t: the prefix up to the
    # last index holding that same confidence.
    last = np.searchsorted(-conf_sorted, -conf_sorted, side="right") - 1
    answered = last + 1
    accuracy = right[last] / answered
    ok = np.flatnonzero(accuracy >= target - 1e-12)
    if len(ok) == 0:
        best = int(np.argmax(accuracy))
        return ThresholdChoice(target, None, None, None, (
            f"No confidence threshold reaches {target:.1%} accuracy on these {len(labels):,} drawings: even answering "
            f"only the {int(answered[best]):,} most confident gives {accuracy[best]:.1%}."))
    i = int(ok[np.argmin(conf_sorted[ok])])
    if answered[i] == len(labels):
        return ThresholdChoice(target, 0.0, float(accuracy[i]), 1.0, (
            f"Answering {'the one drawing' if len(labels) == 1 else f'all {len(labels):,} drawings'} already gives "
            f"{accuracy[i]:.1%} accuracy (at least {target:.1%}): "
            "no threshold is needed."))
    threshold, cover = float(conf_sorted[i]), answered[i] / len(labels)
    return ThresholdChoice(target, threshold, float(accuracy[i]), float(cover), (
        f"A confidence threshold of {threshold:.1%} keeps {accuracy[i]:.1%} accuracy (at least {target:.1%}) and "
        f"answers {cover:.1%} of the drawings ({int(answered[i]):,} of {len(labels):,}); below it the model should "
        "say it is not sure."))

"""What Evaluate and Explain judge a model on (its test split, or a drawing set) and the scores behind it: the
test-set predictions, scored in the background on a model's first visit with their progress for the page, and the
drawing sets' scores. Cached per weights checksum and per set content; server-wide like dashboard/state.py's
resources.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import streamlit as st
import torch

from core.data.datasets import DIGITS, Splits
from core.data.drawing_parts import DrawingImages, images
from core.data.drawing_sets import DrawingSet
from core.errors import DigitLabError
from core.inference.drawing_scores import DIGIT_DATASETS, SetScore, score_all, score_model
from core.inference.evaluation import pending_predictions, split_predictions
from core.inference.metrics import EvalResult
from core.inference.weights import ModelSource, model_source
from core.storage import sha256_file
from core.tasks import TaskRunner
from dashboard.state import drawing_store, run_store


@st.cache_resource(show_spinner="Evaluating the model on every test image…", max_entries=32)
def predictions(key: str, sha256: str | None, dataset: str):
    """A model's probabilities on the test split (disk-cached in core; kept in memory here)."""
    return split_predictions(run_store(), model_source(run_store(), key), "test", dataset)


@st.cache_resource(show_spinner=False)
def _scoring() -> tuple[TaskRunner, dict[str, str], threading.Lock]:
    """The background scorer of test sets (one model at a time), the task scoring each model, and their lock."""
    return TaskRunner(), {}, threading.Lock()


def scoring_progress(src: ModelSource, dataset: str) -> tuple[int, int] | None:
    """None once `src`'s test-set predictions can be read at once (Evaluate then shows its figures); else how far
    their computation has come, (images done, images in all). When nobody computes them yet (the server's warm-up
    computes the starter's), a background task starts. A task that ended without them (it failed: damaged weights)
    also gives None, and is not tried again for the same file: the page computes them itself and says what is wrong."""
    try:
        checksum = sha256_file(src.weights)
        pending = pending_predictions(run_store(), src, "test", dataset, checksum)
    except (OSError, DigitLabError):
        return None  # e.g. the weights file is gone: the page's own attempt says so
    if pending is not None and src.sha256 and checksum != src.sha256:
        return None  # damaged or replaced weights: loading them says so at once
    key = f"{checksum}:{dataset}"
    if pending != (0, 0):
        return pending
    runner, tasks, lock = _scoring()
    with lock:
        task = runner.get(tasks.get(key))
        if task is None:
            store = run_store()
            tasks[key] = runner.submit(f"Scoring {src.name}",
                                       lambda _progress: split_predictions(store, src, "test", dataset)).id
        elif task.status == "done":  # and yet no cache file (deleted since): the page computes them
            del tasks[key]
            return None
        elif task.status == "failed":
            return None
    return pending


def set_version(set_id: str) -> str:
    """A short digest of a set's drawings and labels: cached scores are recomputed when it changes."""
    rows = drawing_store().labels_and_digests(set_id)
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


@st.cache_data(show_spinner="Scoring every model on the drawings…", max_entries=32)
def set_score_table(set_id: str, version: str, runs: tuple[tuple[str, str | None], ...], part: str) -> list[dict]:
    """`score_all` on a set (`version` and `runs` are the cache key: the set's content, the finished runs)."""
    return score_all(run_store(), drawing_store(), set_id, part)


@st.cache_data(show_spinner="Scoring the model on the drawings…", max_entries=64)
def set_score(set_id: str, version: str, key: str, sha256: str | None, part: str) -> SetScore:
    """One model on a set (or one part of it); cached per set content and weights."""
    return score_model(run_store(), drawing_store(), set_id, key, part)


# -- what Evaluate and Explain judge a model on: its test split, or a drawing set ----------------------------
TEST_SET = "test"  # the choice meaning "the dataset's test split"


@dataclass(frozen=True)
class Judged:
    """A model's probabilities on a collection of labelled images, with the images and the words that name them."""

    what: str  # how a caption names the collection: "the 10,000 test images of MNIST handwritten digits"
    result: EvalResult
    images: object  # images[i] is one 28×28 image, uint8 or float in [0, 1] (numpy or torch)
    classes: tuple[str, ...]
    drawing_set: DrawingSet | None = None  # set when the collection is a drawing set


def judging_sets(src: ModelSource) -> list[DrawingSet]:
    """The drawing sets a model can be judged on: those with drawings, when the model reads digits."""
    if src.dataset not in DIGIT_DATASETS:
        return []
    return [s for s in drawing_store().list_sets() if s.count]


def judge(src: ModelSource, dataset: str, splits: Splits, choice: str) -> Judged:
    """`src` on the test split of `dataset` (choice TEST_SET) or on the drawing set with id `choice`.

    Drawings are read from their exact float model inputs, as Draw & predict and the Drawings page read them, so
    the three pages agree to the last drawing.
    """
    if choice == TEST_SET:
        result = predictions(src.key, src.sha256, dataset)
        return Judged(f"the {len(result.labels):,} test images of {splits.info.title}", result, splits.test_x,
                      splits.info.classes)
    drawing_set, version = drawing_store().get_set(choice), set_version(choice)  # one read of the set's contents
    score = set_score(choice, version, src.key, src.sha256, "all")
    result = EvalResult.from_probs(torch.from_numpy(score.probs).float(), torch.from_numpy(score.labels).long())
    return Judged(f"the {score.n:,} drawings of the set “{drawing_set.name}”", result,
                  drawing_images(choice, version).inputs, DIGITS, drawing_set)


@st.cache_data(show_spinner=False, max_entries=16)
def drawing_images(set_id: str, version: str) -> DrawingImages:
    """A set's drawings as model inputs and labels, in the order scores list them (`version` is the cache key)."""
    return images(drawing_store(), set_id)

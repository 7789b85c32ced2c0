"""Server-wide resources and per-session selections shared by every page.

`job_manager()` and `run_store()` are one per server (`st.cache_resource`); `current_dataset()` and
`current_run()` are what the sidebar selected for this session.
"""
from __future__ import annotations

import os

import streamlit as st
import torch

from core.data import DATASETS, Splits, load_splits, resolve_dataset
from core.evaluation import STARTER  # the key meaning "the model shipped with the app"
from core.jobs import JobManager
from core.runs import RunRecord, RunStore



@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """One job manager (and run store) for the whole server, shared by every session."""
    return JobManager.shared(RunStore())


def run_store() -> RunStore:
    return job_manager().store


@st.cache_resource(show_spinner="Loading the dataset…")
def dataset_splits(name: str) -> Splits:
    """A dataset's splits on the CPU, loaded once per server (pages only read them)."""
    return load_splits(name, "cpu")


@st.cache_data(show_spinner=False)
def dataset_stats(name: str) -> dict:
    """Pixel statistics and class counts of a dataset's training split (computed once per server)."""
    return dataset_splits(name).stats()


@st.cache_data(show_spinner=False, ttl=60)
def resolved_dataset(name: str) -> tuple[str, str | None]:
    return resolve_dataset(name)


def device_label() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    if torch.backends.mps.is_available():
        return "GPU: Apple MPS"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def current_dataset() -> str:
    """The dataset this session works on (the sidebar's choice, after any fallback)."""
    return st.session_state.get("app_dataset_resolved", "mnist")


def current_run_id() -> str:
    """The run chosen in the sidebar, or STARTER."""
    return st.session_state.get("app_run", STARTER)


def finished_runs() -> list[RunRecord]:
    """Runs that have weights to load, newest first."""
    return [r for r in run_store().list() if r.weights_sha256]


def dataset_title(name: str) -> str:
    return DATASETS[name].title


@st.cache_resource(show_spinner="Evaluating the model on every test image…", max_entries=32)
def predictions(key: str, sha256: str, dataset: str):
    """A model's probabilities on the test split (disk-cached in core; kept in memory here)."""
    from core.evaluation import model_source, split_predictions

    return split_predictions(run_store(), model_source(run_store(), key), "test", dataset)


def source_dataset(src_dataset: str) -> str:
    """The model's own dataset when available, else the session's (e.g. the built-in fallback)."""
    from core.data import is_available

    return src_dataset if is_available(src_dataset) else current_dataset()


def source_names(runs: list[RunRecord] | None = None) -> dict[str, str]:
    """Every model with weights (the starter first), for select boxes: key -> label."""
    runs = finished_runs() if runs is None else runs
    return {STARTER: "Starter model (shipped)",
            **{r.id: f"{r.name} · {r.metrics.get('test_accuracy', 0):.2%}" for r in runs}}


def selected_source():
    """The sidebar's model as a source, the dataset to judge it on, and that dataset's splits.

    Shows the reason and stops the page when the model cannot be loaded (e.g. missing weights).
    """
    from core.errors import DigitLabError
    from core.evaluation import model_source

    try:
        src = model_source(run_store(), current_run_id())
    except DigitLabError as error:
        st.error(str(error), icon=":material/error:")
        st.stop()
    dataset = source_dataset(src.dataset)
    return src, dataset, dataset_splits(dataset)

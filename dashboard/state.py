"""Server-wide resources, per-session selections, and the named hand-offs between pages.

`job_manager()` and `run_store()` are one per server (`st.cache_resource`); `current_dataset()` and
`current_run_id()` are what the sidebar selected for this session. Pages pass things to each other only
through the functions here (`send_to_explain`, `watch_job`, `select_model`, `set_predict_threshold`), never by
writing another page's session keys. What a model is judged on, and its cached scores: dashboard/judging.py.
"""
from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import streamlit as st
import torch

from core.data.datasets import DATASETS, Splits, is_available, load_splits, resolve_dataset
from core.data.drawing_sets import Drawing, DrawingSet, DrawingStore
from core.errors import DigitLabError
from core.policy import VISITOR_KEY, Policy
from core.training.config import TrainConfig, plan
from core.training.devices import native_bf16, usable_cores
from core.training.jobs import Job, JobManager
from core.runs import RunRecord, RunStore
from core.tasks import TaskRunner
from core.inference.weights import STARTER, model_source

@st.cache_resource(show_spinner=False)
def job_manager() -> JobManager:
    """One job manager (and run store) for the whole server, shared by every session."""
    return JobManager.shared(RunStore())


@st.cache_resource(show_spinner=False)
def task_runner() -> TaskRunner:
    """One background runner for long computations (robustness curves, corruptions), shared by sessions."""
    return TaskRunner()


def run_store() -> RunStore:
    return job_manager().store


@st.cache_resource(show_spinner="Preparing the explainer…", max_entries=8)
def explainer_for(key: str, sha256: str, dataset: str, background: int):
    """One explainer per model and background size, shared by every session and the warm-up (it works on a private
    copy of the model and caches what it computed, per image)."""
    from core.insight.explain import Explainer  # shap, lime and captum load only when explanations are asked for
    from core.inference.weights import load_source

    source = model_source(run_store(), key)
    return Explainer(load_source(source), source.model, dataset=dataset, background_size=background)


EXPLAIN_DEFAULTS = {"index": 0, "background": 100, "method": "gradient"}  # the Explain page's first view


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
    threads = torch.get_num_threads()
    native = ", native bf16 (AMX)" if native_bf16(torch.device("cpu")) else ""  # what precision auto uses
    return f"CPU: {usable_cores()} cores, {threads} torch thread{'' if threads == 1 else 's'}{native}"


def current_dataset() -> str:
    """The dataset this session works on (the sidebar's choice, after any fallback)."""
    return st.session_state.get("app_dataset_resolved", "mnist")


def current_run_id() -> str:
    """The run chosen in the sidebar, or STARTER."""
    return st.session_state.get("app_run", STARTER)


def finished_runs(include_unfinished: bool | None = None) -> list[RunRecord]:
    """Completed runs with weights, newest first; stopped and failed runs with weights too on request.

    `include_unfinished=None` follows the sidebar's "Include stopped runs" toggle.
    """
    if include_unfinished is None:
        include_unfinished = bool(st.session_state.get("app_include_unfinished", False))
    return [r for r in run_store().list() if r.weights_sha256 and (include_unfinished or r.status == "completed")]


def dataset_title(name: str) -> str:
    return DATASETS[name].title


def source_dataset(src_dataset: str) -> str:
    """The model's own dataset when available, else the session's (e.g. the built-in fallback)."""
    return src_dataset if is_available(src_dataset) else current_dataset()


def runs_table_key(records: list[RunRecord]) -> str:
    """The Runs table's key for these rows: a table keeps its selected row numbers while its key stays, so the key
    changes with the rows shown and a selection never lands on a run that moved into a selected row."""
    return "runs_table_" + hashlib.sha256(" ".join(r.id for r in records).encode()).hexdigest()[:12]


def model_config(key: str) -> dict:
    """The settings model `key` (a run id or STARTER) was trained with."""
    return model_source(run_store(), key).config


def model_dataset(key: str) -> str:
    """The dataset model `key` (a run id or STARTER) reads and is judged on: its own, else the session's."""
    return source_dataset(model_source(run_store(), key).dataset)


def source_names(runs: list[RunRecord] | None = None) -> dict[str, str]:
    """Every model with weights (the starter first), for select boxes: key -> label."""
    runs = finished_runs() if runs is None else runs
    labels = {r.id: run_label(r) for r in runs}
    seen = Counter(labels.values())
    # Names repeat ("speed-cnn on mnist" for every such run): two runs that read alike get their ids' ends added
    return {STARTER: "Starter model (shipped)",
            **{i: f"{label} · {i[-6:]}" if seen[label] > 1 else label for i, label in labels.items()}}


def run_label(record: RunRecord) -> str:
    """A run as a select box shows it: name, test accuracy, and its status when it did not complete."""
    accuracy = record.metrics.get("test_accuracy")
    status = "" if record.status == "completed" else f" ({record.status})"
    return f"{record.name}{status} · {accuracy:.2%}" if accuracy is not None else f"{record.name}{status}"


def selected_source():
    """The sidebar's model as a source, the dataset to judge it on, and that dataset's splits.

    Shows the reason and stops the page when the model cannot be loaded (e.g. missing weights).
    """
    try:
        src = model_source(run_store(), current_run_id())
    except DigitLabError as error:
        st.error(str(error), icon=":material/error:")
        st.stop()
    dataset = source_dataset(src.dataset)
    return src, dataset, dataset_splits(dataset)


# -- hand-offs between pages ----------------------------------------------------------------------------
_PENDING_MODEL = "handoff_model"
_EXPLAIN_OFFERS = "handoff_explain_offers"
_EXPLAIN_FOCUS = "handoff_explain_focus"
_WATCHED_JOB = "handoff_watched_job"


def select_model(key: str) -> None:
    """Make `key` the sidebar's model from the next run on (the sidebar applies it before it is drawn)."""
    st.session_state[_PENDING_MODEL] = key


def apply_selected_model() -> None:
    """Called by the sidebar before drawing its model picker."""
    key = st.session_state.pop(_PENDING_MODEL, None)
    if key is not None:
        st.session_state["app_run"] = key
        if key != STARTER and run_store().get(key).status != "completed":
            st.session_state["app_include_unfinished"] = True  # the chosen model must be in the list


@dataclass(frozen=True)
class ExplainRequest:
    """An image one page offers to Explain, with the model that read it."""

    origin: str  # the page it comes from, as a person calls it ("Draw & predict", "Evaluate")
    image: np.ndarray  # 28×28 float32 in [0, 1]: what the model saw
    model: str  # the model key that read it (run id or "starter")
    label: int | None = None  # the true label, when known
    note: str = ""  # what Explain should say of how it was read (e.g. by an ensemble, of which one member is explained)


def offer_to_explain(request: ExplainRequest) -> None:
    """Keep `request` for the Explain page (the latest one per origin)."""
    st.session_state.setdefault(_EXPLAIN_OFFERS, {})[request.origin] = request


def send_to_explain(request: ExplainRequest) -> None:
    """Open Explain on `request`'s image, with the model that read it selected."""
    offer_to_explain(request)
    st.session_state[_EXPLAIN_FOCUS] = request.origin
    select_model(request.model)
    st.switch_page("app_pages/explain.py")


def explain_offers() -> dict[str, ExplainRequest]:
    return dict(st.session_state.get(_EXPLAIN_OFFERS, {}))


def take_explain_focus() -> str | None:
    """The origin Explain was just opened for (once), else None."""
    return st.session_state.pop(_EXPLAIN_FOCUS, None)


def watch_job(job_id: str) -> None:
    """Show this job on the Train page's live panel."""
    st.session_state[_WATCHED_JOB] = job_id


def watched_job() -> str | None:
    return st.session_state.get(_WATCHED_JOB)


def forget_watched_job() -> None:
    st.session_state.pop(_WATCHED_JOB, None)


# -- who may do what (shared-server mode, core.policy) ---------------------------------------------------
_VISITOR = "visitor_id"
_ADMIN = "visitor_is_admin"


@st.cache_resource(show_spinner=False)
def policy() -> Policy:
    """The server's policy, read once from the environment (DIGIT_LAB_SHARED and friends)."""
    return Policy.from_env()


def visitor_id() -> str:
    """This browser session's id: the runs it starts are its own on a shared server."""
    return st.session_state.setdefault(_VISITOR, secrets.token_hex(8))


def is_admin() -> bool:
    return bool(st.session_state.get(_ADMIN))


def sign_in_admin(token: str) -> bool:
    """Make this session the admin when `token` is the server's admin token."""
    ok = policy().is_admin_token(token)
    st.session_state[_ADMIN] = ok or is_admin()
    return ok


def may_manage(record: RunRecord) -> bool:
    """Whether this session may stop, resume, rename or delete `record`."""
    return policy().may_manage(record.config, visitor_id(), is_admin())


def my_active_jobs() -> list[Job]:
    """This visitor's queued and running jobs, oldest first."""
    jobs = job_manager()
    mine = []
    for job in jobs.active():
        try:
            extra = jobs.store.get(job.id).config.get("extra") or {}
        except DigitLabError:
            continue
        if extra.get(VISITOR_KEY) == visitor_id():
            mine.append(job)
    return mine


def start_training(cfg: TrainConfig, name: str | None = None, parent: str | None = None) -> Job:
    """Queue a run for `cfg` as this visitor's (the server's caps apply). The Train page watches it, unless it
    already watches a run still queued or training: that one stays in view (with its Stop), the new one is listed
    under it."""
    run = plan(cfg, dataset_splits(cfg.dataset).sizes())
    policy().check_start(cfg.epochs, run.train_images, len(my_active_jobs()), is_admin())
    job = job_manager().submit(cfg.replace(extra={**cfg.extra, VISITOR_KEY: visitor_id()}), name=name, parent=parent)
    watched = job_manager().get(watched_job()) if watched_job() else None
    if watched is None or watched.done:
        watch_job(job.id)
    return job


def resume_training(record: RunRecord) -> Job:
    """Resume `record` if this visitor may (their own run, or the admin), within the queue cap."""
    if not may_manage(record):
        raise DigitLabError("This run was started by another visitor; only they or the admin can resume it.")
    policy().check_start(0, 0, len(my_active_jobs()), is_admin())
    job = job_manager().resume(record.id)
    watch_job(record.id)
    return job


def stop_training(record: RunRecord) -> None:
    if not may_manage(record):
        raise DigitLabError("This run was started by another visitor; only they or the admin can stop it.")
    job_manager().stop(record.id)


# -- drawing sets (core.data.drawing_sets) -----------------------------------------------------------------
_PREDICT_THRESHOLD = "handoff_predict_threshold"
_DRAWING_SET = "handoff_drawing_set"
_DRAWINGS_TAB = "handoff_drawings_tab"


@st.cache_resource(show_spinner=False)
def drawing_store() -> DrawingStore:
    """The drawing sets beside the server's run store."""
    return DrawingStore(run_store().root)


def use_drawing_set(set_id: str, open_tab: str | None = None) -> None:
    """Remember the set this visitor last saved to or opened: Draw & predict and Drawings start on it; `open_tab`
    (a tab's name, e.g. "Retrain") is the tab the Drawings page opens on next."""
    st.session_state[_DRAWING_SET] = set_id
    if open_tab:
        st.session_state[_DRAWINGS_TAB] = open_tab


def take_drawings_tab() -> str | None:
    """The tab the Drawings page was asked to open on (once), else None."""
    return st.session_state.pop(_DRAWINGS_TAB, None)


def current_drawing_set() -> str | None:
    return st.session_state.get(_DRAWING_SET)


def may_edit_set(drawing_set: DrawingSet) -> bool:
    """Whether this session may rename or delete `drawing_set` (its creator, the admin, or anyone off a shared server)."""
    return not policy().shared or is_admin() or drawing_set.owner == visitor_id()


def may_edit_drawing(drawing: Drawing) -> bool:
    """Whether this session may relabel or delete `drawing` (who drew it, the admin, or anyone off a shared server)."""
    return not policy().shared or is_admin() or drawing.drawer == visitor_id()


def set_predict_threshold(value: float) -> None:
    """Make `value` Draw & predict's confidence threshold from its next run on."""
    st.session_state[_PREDICT_THRESHOLD] = float(value)


def apply_predict_threshold() -> None:
    """Called by Draw & predict before drawing its threshold slider."""
    value = st.session_state.pop(_PREDICT_THRESHOLD, None)
    if value is not None:
        st.session_state["predict_threshold"] = min(1.0, max(0.0, float(value)))


def restore_widgets(*keys: str, **defaults: Any) -> None:
    """Before a page draws these widgets: the values they had when the page was last drawn (`remember_widgets`), else
    `defaults`. Streamlit forgets a widget's value in any run that does not draw it, so a visit to another page reset
    them (Draw & predict's models, threshold, brush and open tab). A widget with a default gets it here, not as its
    own `value` (see keep_widget_values)."""
    for key in (*keys, *defaults):
        if key not in st.session_state and f"{key}_kept" in st.session_state:
            st.session_state[key] = st.session_state[f"{key}_kept"]
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)


def remember_widgets(*keys: str) -> None:
    """After a page drew these widgets: keep their values for `restore_widgets` on its next visit."""
    for key in keys:
        if key in st.session_state:
            st.session_state[f"{key}_kept"] = st.session_state[key]


def follow_sidebar_model(key: str, offered: Iterable[str]) -> None:
    """Before a page draws its own list of models (a multiselect under `key`): it starts on the sidebar's model and
    follows it whenever the sidebar's model changes (the sidebar is the model Draw & predict, Evaluate and Explain
    use), and drops the models no longer `offered` (deleted, or hidden by the sidebar's toggle)."""
    sidebar, follows = current_run_id(), f"{key}_follows"
    if key not in st.session_state or st.session_state.get(follows) != sidebar:
        st.session_state[key] = [sidebar]
    else:
        chosen = st.session_state[key]
        kept = [k for k in chosen if k in set(offered)]
        if kept != chosen:  # written only on a change: a value written back each run could undo a quick pick
            st.session_state[key] = kept or [sidebar]  # all it held is gone: back on the sidebar's model
    st.session_state[follows] = sidebar


def keep_widget_values(*keys: str, **defaults: Any) -> None:
    """Keep these widgets' values while they are not drawn (a page's closed lazy tab): Streamlit forgets a widget's
    value in any run that does not draw it, and the tab would reopen on its defaults. Writing a value back to
    session state before the widgets are drawn keeps it. A widget with a default gets it here, not as its own
    `value`: one given both ways makes Streamlit log a warning each time the tab reopens."""
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)
    for key in (*keys, *defaults):
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]

"""The server process itself: its torch thread count (set when this module is imported, before any page runs), what
it prepares before answering anyone (`prepare`, called by dashboard/app.py's lifespan) and the warm-up after its
first page. Per-session state and hand-offs live in dashboard/state.py.
"""
from __future__ import annotations

import functools
import os
import threading

import streamlit as st
import torch

from core.data.datasets import DATASETS, is_available
from core.inference.evaluation import split_predictions
from core.inference.weights import STARTER, model_source
from core.models.zoo import ZOO
from core.runs import RunStore
from core.training.devices import usable_cores
from dashboard import state

SERVER_THREADS = "DIGIT_LAB_SERVER_THREADS"  # torch threads in the dashboard server; 0 leaves torch's default


def _set_server_threads() -> None:
    """Torch threads in the server: DIGIT_LAB_SERVER_THREADS, else half the cores (one on a 2-core machine).

    The server reads one drawing at a time for many visitors at once, beside their browsers and the training
    process. On 2 cores, with two threads every op waited at a barrier for a thread the scheduler had parked: a
    drawing's prediction took about 100 ms in the server instead of 6 ms with one thread. The price is paid by the
    heavy computations, about 1.6x slower on one thread than on two here (SHAP of the starter 2.5 s against 1.5 s;
    its test-set evaluation 13 s against 8 s, once per model: it is cached on disk and warmed up, see warm_up).
    Training runs in its own process with its own thread count.
    """
    default = max(1, usable_cores() // 2)
    try:
        threads = int(os.environ.get(SERVER_THREADS) or default)
    except ValueError:
        print(f"{SERVER_THREADS}={os.environ[SERVER_THREADS]!r} is not a whole number; using {default}.", flush=True)
        threads = default
    if threads > 0:
        torch.set_num_threads(threads)


_set_server_threads()

WARM_UP = "DIGIT_LAB_WARM_UP"  # "0": no explanation libraries before the first visitor, no warm-up after it (tests)


@functools.cache  # once per process: the frame calls it on every run too (AppTest runs it without the lifespan)
def prepare() -> None:
    """Before the server answers its first visitor (about 10 s on 2 cores): import what the pages import, load the
    default dataset with its statistics (Home shows them), read the zoo's sizes (the Train page shows them; stored
    in core/assets/zoo_measures.json, counted here only for a model the file lacks) and, unless DIGIT_LAB_WARM_UP=0,
    import the explanation libraries (~4 s). Without this, a fresh server's first visitor waited about 5 s inside
    Home's first run, and the Train page's first visit waited behind the warm-up thread's imports. A failure here is
    only printed: the pages meet the same problem and say so in their own words."""
    import pandas  # noqa: F401 - imported once here, before sessions race to import it inside plotly (a cold
    import plotly.graph_objects  # noqa: F401 - server hit by many sessions at once raised "partially initialized")

    from dashboard import widgets  # noqa: F401

    try:
        state.run_store()
        name, _ = state.resolved_dataset(next(iter(DATASETS)))
        state.dataset_stats(name)  # loads the splits too
        for spec in ZOO.values():
            spec.flops  # noqa: B018 - measured once per process (cached)
        if os.environ.get(WARM_UP, "1") != "0":
            import captum.attr  # noqa: F401 - the explainers' libraries, which core.insight imports on first use
            import lime.lime_image  # noqa: F401
            import shap  # noqa: F401
    except Exception as error:  # noqa: BLE001 - reported by the pages themselves
        print(f"Digit Lab: preparing the server failed ({type(error).__name__}: {error}); the pages will say why.",
              flush=True)


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread | None:
    """Once per server, 2 s after its first page's run (while the browser draws that page the cores are its own): a
    background thread computes the Explain page's first view (SHAP of test image 0, 2.5 s; kept by the shared
    explainer) and the starter's predictions on its test set (13 s on one thread; cached on disk), so Evaluate and
    Explain open in seconds rather than after ~15 s of work. A page that needs either before the thread is done
    waits for it instead of computing it twice (core.inference.evaluation, core.insight.explain)."""
    if os.environ.get(WARM_UP, "1") == "0":
        return None
    store = state.run_store()
    thread = threading.Timer(WARM_UP_DELAY, _warm_behind_visitors, args=(store,))
    thread.name, thread.daemon = "digit-lab-warm-up", True
    thread.start()
    return thread


WARM_UP_DELAY = 2.0  # seconds after the first page's run: its browser draws the page first, on the same cores
WARM_UP_NICE = 10  # the warm-up thread's scheduling priority (Linux: per thread): behind every visitor's rerun


def _behind_visitors() -> None:
    """Lower the calling thread's priority, so its work (on the server's one torch thread) takes only the CPU that
    visitors' reruns leave. On a fresh server a class arrives during the warm-up: at the same priority it took half
    of the server's share of the cores, and each drawing's answer waited for it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_UP_NICE)
    except (AttributeError, OSError):  # not Linux, or not allowed: the warm-up only runs at the visitors' priority
        pass


def _warm_behind_visitors(store: RunStore) -> None:
    """The warm-up thread's body: its own priority lowered, then the warm-up."""
    _behind_visitors()
    _warm(store)


def _warm(store: RunStore) -> None:
    try:
        starter = model_source(store, STARTER)
        if is_available(starter.dataset):
            # First the Explain page's first view (same image, background and method; ~2.5 s), kept by the shared
            # explainer, which reads a uint8 test image as the page's [0, 1] floats: that page waits for it. Then
            # the test-set predictions (~13 s), which Evaluate shows as progress while they run.
            first = state.EXPLAIN_DEFAULTS
            image = state.dataset_splits(starter.dataset).test_x[first["index"]]
            state.explainer_for(STARTER, starter.sha256, starter.dataset, first["background"]).shap(image, first["method"])
            split_predictions(store, starter, "test", starter.dataset)
    except Exception as error:  # noqa: BLE001 - a warm-up never breaks the app; the pages compute on demand
        print(f"Digit Lab warm-up skipped: {type(error).__name__}: {error}", flush=True)

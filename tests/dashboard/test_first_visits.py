"""A fresh server's first visits: Home without plotly, and what the server prepares and warms up for the others."""
from __future__ import annotations

import os
import re

import pytest

from core.runs import RunStore
from tests.dashboard.conftest import assert_clean, goto


def test_home_shows_each_class_with_its_training_count_and_no_plotly_chart(app, mnist):
    import torch

    app.run()
    assert_clean(app)
    blocks = [block.proto.body for block in app.get("html") if "<figcaption" in block.proto.body]
    assert len(blocks) == 1  # the samples: one HTML block, no media file per class
    captions = re.findall(r"<figcaption[^>]*>([^<]*)</figcaption>", blocks[0])
    counts = torch.bincount(mnist.train_y, minlength=10).tolist()
    assert captions == [f"{digit} · {count:,} training images" for digit, count in enumerate(counts)]
    assert blocks[0].count('src="data:image/png;base64,') == 10
    sizes = next(block.proto.body for block in app.get("html") if "Training images" in block.proto.body)
    assert f">{len(mnist.train_y):,}<" in sizes and f">{len(mnist.test_y):,}<" in sizes  # the figures, in one block
    # plotly.js (4.7 MB) froze a fresh browser's first page for seconds on 2 cores: Home does without it
    assert not app.get("plotly_chart")


def test_first_render_does_not_load_the_explanation_libraries():
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("from streamlit.testing.v1 import AppTest; import sys\n"
            f"at = AppTest.from_file({str(REPO / 'dashboard' / 'frame.py')!r}, default_timeout=120); at.run()\n"
            "assert not at.exception\n"
            "print(sorted(m for m in ('shap', 'lime', 'captum') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"  # they load only when the Explain page is opened


def test_the_warm_up_leaves_evaluate_and_explain_their_first_views(app, tmp_path, monkeypatch):
    from core.data.datasets import is_available
    from core.inference import evaluation
    from core.inference.weights import STARTER, model_source
    from core.insight.explain import Explainer
    from dashboard import server, state

    if not is_available("mnist"):
        pytest.skip("MNIST is not here")
    store = RunStore(tmp_path / "home")
    server._warm(store)  # what the background thread runs once per server
    cached = list((tmp_path / "home" / "cache").glob("*-mnist-test.safetensors"))
    assert len(cached) == 1

    def no_recompute(*args, **kwargs):
        raise AssertionError("a page recomputed what the warm-up left")

    monkeypatch.setattr(evaluation, "evaluate", no_recompute)
    result = evaluation.split_predictions(store, model_source(store, STARTER), "test")
    assert result.n == 10_000 and result.accuracy > 0.99
    monkeypatch.setattr(Explainer, "_shap_values", no_recompute)
    app.run()
    goto(app, "explain")  # its first view: test image 0 with the starter, SHAP kept by the shared explainer
    assert_clean(app)
    assert app.number_input(key="explain_index").value == state.EXPLAIN_DEFAULTS["index"]
    assert any("SHAP values of each class" in str(c.proto.spec) for c in app.get("plotly_chart"))


def test_evaluate_shows_a_models_first_scoring_as_progress_then_its_figures(app, tmp_path, monkeypatch):
    """A model without cached test predictions (the starter on a fresh server) is scored in the background: the page
    draws at once with a progress bar instead of blocking, then shows the figures."""
    import threading
    import time

    from core.inference import evaluation
    from core.inference.weights import model_source
    from tests.dashboard.pages_helpers import finished_runs, open_with_model

    store, ids = finished_runs(tmp_path / "home", n=1)
    for cached in (tmp_path / "home" / "cache").glob("*-test.safetensors"):
        cached.unlink()  # as if the run had finished on another server
    gate, real = threading.Event(), evaluation.evaluate

    def slow_evaluate(*args, progress=None, **kwargs):
        progress(1, 2)  # half way
        assert gate.wait(60)
        return real(*args, progress=progress, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", slow_evaluate)
    open_with_model(app, "evaluate", ids[0])
    assert_clean(app)
    src = model_source(store, ids[0])

    def wait_for(pending):
        deadline = time.time() + 60
        while evaluation.pending_predictions(store, src, "test", "digits") != pending and time.time() < deadline:
            time.sleep(0.05)

    wait_for((1, 2))
    app.run()  # what the panel's timer does, once a second
    assert_clean(app)
    bars = app.get("progress")
    assert len(bars) == 1 and "Scoring run seed" in bars[0].proto.text and "1 of 2" in bars[0].proto.text
    assert bars[0].proto.value == 50
    assert not app.metric  # no figures before the predictions exist
    gate.set()
    wait_for(None)
    app.run()
    assert_clean(app)
    assert not app.get("progress")
    report = store.get(ids[0])
    assert app.metric[0].label == "Accuracy"
    assert app.metric[0].value == f"{report.metrics['test_accuracy']:.2%}"


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread priorities are a Linux feature")
def test_the_warm_up_thread_runs_behind_the_visitors(monkeypatch):
    import threading

    from dashboard import server

    seen = {}
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    monkeypatch.setattr(server, "_warm", lambda store: seen.setdefault(
        "warm-up", os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    monkeypatch.setattr(server, "WARM_UP_DELAY", 0.0)
    monkeypatch.delenv(server.WARM_UP, raising=False)
    server.warm_up.clear()
    thread = server.warm_up()
    thread.join(timeout=30)
    server.warm_up.clear()
    assert seen["warm-up"] == max(caller, server.WARM_UP_NICE)  # the thread the server starts, behind visitors
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller  # and only that thread

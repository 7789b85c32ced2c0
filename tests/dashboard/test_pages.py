"""AppTest for every page: renders cleanly; Evaluate, Explain and Under the hood at work; run names stay plain text.
The Train and Runs pages have their own files."""
from __future__ import annotations

import time

import numpy as np
import pytest

from dashboard.widgets import plain
from tests.dashboard.conftest import assert_clean, goto, open_tab
from tests.dashboard.pages_helpers import evaluate_page, finished_runs, open_with_model, runs_table


PAGES = ["home", "train", "runs", "predict", "evaluate", "explain", "robustness", "under_the_hood"]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_every_page_renders_without_error(app, page, dataset, request):
    if dataset == "mnist":
        request.getfixturevalue("mnist")  # skipped locally without MNIST, a failure in CI
    app.run()
    app.selectbox(key="app_dataset").set_value(dataset).run()
    goto(app, page)
    assert_clean(app)
    assert app.title[0].value


def test_fallback_dataset_is_announced_in_the_sidebar(app, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path / "no-data"))
    app.run()
    assert any("built-in scikit-learn digits" in w.value for w in app.sidebar.warning)
    assert not app.exception


def test_under_the_hood_steps_the_numpy_mlp(app):
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    goto(app, "under_the_hood")
    assert len(app.latex) >= 5
    app.button(key="hood_step10").click().run()
    assert_clean(app)
    steps = next(m for m in app.metric if m.label == "Steps taken")
    assert steps.value == "10"


def test_evaluate_page_shows_metrics_equal_to_the_run_and_compares_two_runs(app, tmp_path):
    store, ids = evaluate_page(app, tmp_path)
    accuracy = next(m for m in app.metric if m.label == "Accuracy").value
    assert accuracy == f"{store.get(ids[0]).metrics['test_accuracy']:.2%}"
    open_tab(app, "eval_tab", "Compare with another model")
    app.selectbox(key="eval_compare").set_value(ids[1]).run()
    assert_clean(app)
    assert any("McNemar" in m.value for m in app.markdown)
    # each image names both models' answers: "said 6 95%" was the sidebar model's alone, under "wrong for" the other
    captions = [p.caption for image in app.get("image") for p in image.proto.imgs if p.caption.startswith("true ")]
    names = [store.get(i).name for i in ids]
    assert captions and all(f"· {names[0][:13]}" in c and f"· {names[1][:13]}" in c for c in captions)
    for caption in captions:  # "true t · A: a · B: b": one of the two models right, the other wrong
        true, first, second = (part.rsplit(" ", 1)[1] for part in caption.split(" · "))
        assert (first == true) != (second == true), caption


def test_evaluate_draws_only_the_open_tab_and_a_closed_tab_keeps_its_settings(app, tmp_path):
    evaluate_page(app, tmp_path)
    drawn = {e.key for kind in ("selectbox", "slider", "number_input") for e in app.get(kind)}
    assert "eval_cell_true" in drawn and not drawn & {"eval_mistake_true", "eval_threshold", "eval_retrain_epochs"}
    assert [c.proto.id for c in app.get("plotly_chart")] and len(app.get("plotly_chart")) == 1  # the confusion matrix
    open_tab(app, "eval_tab", "Calibration & reject option")
    app.slider(key="eval_threshold").set_value(0.9).run()
    assert len(app.get("plotly_chart")) == 2 and not any(e.key == "eval_cell_true" for e in app.selectbox)
    open_tab(app, "eval_tab", "Confusion matrix")
    open_tab(app, "eval_tab", "Calibration & reject option")
    assert app.slider(key="eval_threshold").value == 0.9  # not back to its default 0.7


def test_the_confusion_cell_starts_on_each_models_own_most_frequent_confusion(app, tmp_path):
    # A tester switched the sidebar's model: the cell stayed on the previous model's worst confusion
    store, ids = evaluate_page(app, tmp_path)
    app.selectbox(key="eval_cell_true").set_value(0).run()
    app.selectbox(key="eval_cell_pred").set_value(0).run()
    app.run()
    assert (app.selectbox(key="eval_cell_true").value, app.selectbox(key="eval_cell_pred").value) == (0, 0)  # kept
    app.sidebar.selectbox(key="app_run").set_value(ids[1]).run()
    assert_clean(app)
    true, pred = app.selectbox(key="eval_cell_true").value, app.selectbox(key="eval_cell_pred").value
    assert true != pred  # a confusion of the new model (its most frequent), not the cell chosen for the other


def test_confusion_cell_to_gallery_to_explain_flow(app, tmp_path):
    store, ids = evaluate_page(app, tmp_path, n=2)
    app.selectbox(key="app_run").set_value(ids[1]).run()  # not the newest default: the hand-off must keep it
    text = next(m.value for m in app.markdown if "were read as" in m.value)  # the most frequent confusion
    count = int(text.split("**")[1])
    assert count >= 1  # a model trained for 10 steps makes mistakes
    explain_buttons = [b for b in app.button if b.key and b.key.startswith("eval_cell_explain_")]
    assert len(explain_buttons) == min(count, 18)
    index = int(explain_buttons[0].key.rsplit("_", 1)[1])
    explain_buttons[0].click().run()
    assert_clean(app)
    assert app.title[0].value == "Explain"
    from core.data.datasets import load_splits

    true = load_splits("digits").test_y[index].item()
    name = store.get(ids[1]).name
    reads = next(m.value for m in app.markdown if " reads **" in m.value)
    assert reads.startswith(f"**{plain(name)}** reads") and f"the true label is **{true}**" in reads
    assert app.selectbox(key="app_run").value == ids[1]


def test_retrain_on_hard_cases_starts_a_fine_tuning_run(app, tmp_path):
    store, ids = evaluate_page(app, tmp_path, n=1)
    open_tab(app, "eval_tab", "Retrain on hard cases")
    app.number_input(key="eval_retrain_epochs").set_value(1).run()
    app.button(key="eval_retrain").click().run()
    assert_clean(app)
    child = next(r.id for r in store.list() if r.parent == ids[0])
    record = store.get(child)
    assert record.parent == ids[0] and record.config["init_from"] == ids[0] and record.config["focus_errors"] == 5.0
    deadline = time.time() + 120
    while store.get(child).status in ("queued", "running") and time.time() < deadline:
        time.sleep(0.2)
    assert store.get(child).status == "completed"


def test_explain_page_shows_every_method_and_the_trust_numbers(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=2)
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    app.selectbox(key="app_run").set_value(ids[1]).run()  # the CNN: SHAP deep applies too
    goto(app, "explain")
    assert_clean(app)
    assert app.radio(key="explain_shap_method").options == ["GradientExplainer (expected gradients)",
                                                           "DeepExplainer (DeepLIFT)"]
    assert any("SHAP values of each class" in str(c.proto.spec) for c in app.get("plotly_chart"))
    open_tab(app, "explain_tab", "LIME")
    assert any("Segments that most support" in m.value for m in app.markdown)
    open_tab(app, "explain_tab", "Integrated gradients & occlusion")
    assert any("SHAP and integrated gradients agree" in m.value for m in app.markdown)
    open_tab(app, "explain_tab", "Layers")
    assert app.selectbox(key="explain_layer").options
    open_tab(app, "explain_tab", "Can I trust it?")
    assert any("SHAP additivity" in m.value for m in app.markdown)
    app.button(key="explain_trust_run").click().run()
    assert_clean(app)
    table = next(d.value for d in app.dataframe if "deletion AUC" in d.value.columns)
    assert list(table["method"]) == ["SHAP", "LIME", "Integrated gradients", "Occlusion"]
    assert any("Randomised-model check" in m.value for m in app.markdown)
    open_tab(app, "explain_tab", "Global importance")
    app.select_slider(key="explain_global_n").set_value(100).run()
    app.button(key="explain_global_run").click().run()
    assert_clean(app)
    assert any("over 100 images" in c.value for c in app.caption)


def test_tabs_reopen_on_their_values_without_a_streamlit_warning(app, tmp_path, caplog):
    # A widget given a default and also a value kept through session state made Streamlit log "created with a default
    # value but also had its value set via the Session State API" each time its tab reopened
    store, ids = finished_runs(tmp_path / "home", n=1)
    open_with_model(app, "explain", ids[0])
    open_tab(app, "explain_tab", "LIME")
    app.select_slider(key="explain_lime_samples").set_value(250).run()
    open_tab(app, "explain_tab", "Global importance")
    open_tab(app, "explain_tab", "LIME")
    assert app.select_slider(key="explain_lime_samples").value == 250
    goto(app, "evaluate")
    open_tab(app, "eval_tab", "Calibration & reject option")
    open_tab(app, "eval_tab", "Confusion matrix")
    open_tab(app, "eval_tab", "Calibration & reject option")
    assert app.slider(key="eval_threshold").value == 0.7
    assert_clean(app)
    assert not [r for r in caplog.records if "Session State API" in r.getMessage()]


def test_explain_random_button_picks_another_test_image(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    open_with_model(app, "explain", ids[0])
    from core.data.datasets import load_splits

    labels = load_splits("digits").test_y
    seen = {app.number_input(key="explain_index").value}
    for _ in range(5):  # 360 test images: five draws all landing on the current one is (1/360)^5
        app.button(key="explain_random").click().run()
        seen.add(app.number_input(key="explain_index").value)
    assert_clean(app)
    assert len(seen) > 1
    index = app.number_input(key="explain_index").value
    assert any(f"the true label is **{labels[index].item()}**" in m.value for m in app.markdown)


def test_evaluate_reports_damaged_weights_instead_of_crashing(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    path = store.weights_path(ids[0])
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    app.selectbox(key="app_run").set_value(ids[0]).run()
    for page in ("evaluate", "explain"):
        goto(app, page)
        assert not app.exception
        assert any("checksum" in e.value for e in app.error)


def test_a_click_on_a_confusion_cell_selects_that_cell():
    from dashboard.widgets import confusion_figure, selected_cell

    fig = confusion_figure(np.eye(10), [str(i) for i in range(10)], normalized=False)
    markers = fig.data[1]
    clicked = {"selection": {"points": [{"x": markers.x[38], "y": markers.y[38], "customdata": markers.customdata[38]}]}}
    assert selected_cell(clicked) == (3, 8)  # row 3 (true), column 8 (predicted)
    assert selected_cell({"selection": {"points": []}}) is None


HOSTILE = "![x](http://evil.example/x.png) **loud** :red[alarm] <b>bold</b>"


def test_a_run_name_is_shown_as_plain_text_on_every_page(app, tmp_path):

    store, ids = finished_runs(tmp_path / "home", n=1)
    store.rename(ids[0], HOSTILE)
    shown = plain(HOSTILE)
    assert "![" not in shown and "**" not in shown and ":red[" not in shown and "<b>" not in shown
    open_with_model(app, "evaluate", ids[0])
    assert_clean(app)
    assert any(shown in c.value for c in app.caption)  # "<name> (model) on the N test images"
    goto(app, "train")  # the live panel shows the latest run
    assert any(shown in m.value for m in app.markdown)
    goto(app, "runs")
    app.session_state[runs_table(store)] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert any(h.value == shown for h in app.subheader)
    texts = [e.value for kind in ("markdown", "caption", "subheader", "info") for e in getattr(app, kind)]
    leaks = [t for t in texts if "![x](" in t or "**loud**" in t]
    assert not leaks, leaks

"""AppTest for every page: renders cleanly; Train, Runs, Evaluate, Explain and Under the hood at work."""
from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest

from core.training.config import TrainConfig
from core.training.experiment import create_run, execute_run
from core.runs import RunStore
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


def test_train_page_runs_a_job_that_appears_on_the_runs_page(app, tmp_path):
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    goto(app, "train")
    app.selectbox(key="train_preset").set_value("seed-cnn").run()
    from core.training.measured import preset_sentence

    quoted = preset_sentence("seed-cnn")  # the benchmark's figure for the chosen preset, under its summary
    assert quoted is None or any(quoted in c.value for c in app.caption)
    app.selectbox(key="train_dataset").set_value("digits").run()
    app.number_input(key="train_max_steps").set_value(5).run()
    app.text_input(key="train_name").set_value("from the browser").run()
    app.button(key="train_start").click().run()
    assert_clean(app)
    store = RunStore(tmp_path / "home")
    job_id = store.list()[0].id
    assert any("**from the browser**" in m.value for m in app.markdown)  # the progress shows under the button
    deadline = time.time() + 120
    while store.get(job_id).status in ("queued", "running") and time.time() < deadline:
        time.sleep(0.2)
    assert store.get(job_id).status == "completed"
    assert store.get(job_id).timings["steps"] == 5
    app.run()
    assert any("Finished: test accuracy" in m.value for m in app.success)
    goto(app, "runs")
    assert_clean(app)
    table = app.dataframe(key=runs_table(store)).value
    assert list(table["name"]) == ["from the browser"] and list(table["status"]) == ["completed"]


def test_invalid_settings_are_explained_and_start_is_disabled(app):
    app.run()
    goto(app, "train")
    app.number_input(key="train_lr").set_value(0.0).run()
    assert any(e.value.startswith("Learning rate (peak) must be") for e in app.error)  # the label, not "lr"
    assert app.button(key="train_start").disabled
    # Out of the range too: the box has no bounds of its own (a browser never sends a value outside them, and Start
    # then trained with the old one), so the value typed is the one checked, named and refused
    for key, value, message, fixed in [
            ("train_lr", 100.0, "Learning rate (peak) must be a number in (0, 10] (got 100.0).", 0.01),
            ("train_epochs", 0, "Epochs must be a whole number from 1 to 10,000 (got 0).", 2)]:
        box = app.number_input(key=key)
        assert box.min is None and box.max is None
        box.set_value(value).run()
        assert [e.value for e in app.error] == [message, message]  # beside Start, and under the box it was typed in
        assert app.button(key="train_start").disabled
        app.number_input(key=key).set_value(fixed).run()
    assert not app.error and not app.button(key="train_start").disabled


def test_risky_settings_are_warned_about_before_starting(app):
    app.run()
    goto(app, "train")
    app.selectbox(key="train_optimizer").set_value("adam").run()
    app.number_input(key="train_lr").set_value(0.5).run()
    assert any("diverge" in w.value for w in app.warning)


def test_preset_fills_the_form(app):
    app.run()
    goto(app, "train")
    app.selectbox(key="train_preset").set_value("seed-mlp").run()
    assert app.selectbox(key="train_model").value == "seed-mlp"
    assert app.selectbox(key="train_optimizer").value == "sgd"
    assert app.number_input(key="train_batch_size").value == 100


@pytest.mark.parametrize("amx", [True, False])
def test_precision_auto_says_what_it_means_on_this_machine(app, monkeypatch, amx):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    app.run()
    goto(app, "train")
    app.selectbox(key="train_preset").set_value("fast").run()
    precision = app.selectbox(key="train_precision")
    assert precision.value == "auto" and precision.options[0] == f"auto ({'bf16' if amx else 'fp32'} here)"
    assert any(("native bf16 (AMX)" in c.value) == amx for c in app.sidebar.caption if c.value.startswith("CPU:"))
    app.selectbox(key="train_preset").set_value("seed-mlp").run()  # measured slower in bf16: fp32 whatever the CPU
    assert app.selectbox(key="train_precision").options[0] == "auto (fp32 here)"


def test_runs_page_renames_compares_and_plots_cost_against_benefit(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home")
    app.run()
    goto(app, "runs")
    assert_clean(app)
    assert len(app.dataframe(key=runs_table(store)).value) == 2
    columns = json.loads(app.dataframe(key=runs_table(store)).proto.columns)  # read as a person reads them
    assert (columns["params"]["type_config"]["format"], columns["train time (s)"]["type_config"]["format"],
            columns["test accuracy"]["type_config"]["format"]) == ("localized", "%.1f", "%.2f%%")
    assert app.dataframe(key=runs_table(store)).proto.placeholder == "–"  # not "None" for a run with no accuracy
    accuracies = app.dataframe(key=runs_table(store)).value["test accuracy"]
    assert list(accuracies) == pytest.approx([100 * r.test_accuracy for r in store.list()])  # percent, as shown
    assert any("Pareto" in c.value for c in app.caption)  # cost-benefit over all listed runs
    assert app.radio(key="runs_cost").options
    # rename the newest run (row 0)
    app.session_state[runs_table(store)] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    newest = app.dataframe(key=runs_table(store)).value["id"][0]
    assert any(f"`{newest}.safetensors`" in m.value for m in app.markdown)  # the card names the download's file
    app.text_input(key=f"runs_rename_{newest}").set_value("the renamed run").run()
    app.button(key="runs_rename_save").click().run()
    assert_clean(app)
    assert store.get(newest).name == "the renamed run"
    # compare both
    app.session_state[runs_table(store)] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    app.run()
    assert_clean(app)
    assert any("Comparing 2 runs" in h.value for h in app.subheader)
    diff = next(d.value for d in app.dataframe if "model" in d.value.index)
    assert sorted(diff.loc["model"]) == ["seed-cnn", "seed-mlp"]


def test_runs_page_deletes_only_after_confirmation_and_then_selects_nothing(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=2)
    app.session_state[runs_table(store)] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    goto(app, "runs")
    assert_clean(app)
    assert app.button(key="runs_delete").disabled
    app.checkbox(key=f"runs_delete_sure_{ids[1]}").check().run()  # row 0: the newest
    app.button(key="runs_delete").click().run()
    assert [r.id for r in store.list()] == [ids[0]]
    app.run()
    assert_clean(app)
    # The other run moved up into row 0: it is not now selected, with its own Delete button open under the pointer
    assert len(app.dataframe(key=runs_table(store)).value) == 1
    assert not [b for b in app.button if b.key == "runs_delete"]
    assert not [h for h in app.subheader if h.value == plain(store.get(ids[0]).name)]


def test_a_runs_selection_follows_its_run_when_a_new_run_appears(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    app.run()
    goto(app, "runs")
    app.session_state[runs_table(store)] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert [h.value for h in app.subheader][:1] == [plain(store.get(ids[0]).name)]
    newer = execute_run(store, create_run(store, TrainConfig(model="seed-cnn", dataset="digits", epochs=1,
                                                              limit_batches=3), name="a newer run").id)
    app.run()  # the new run takes row 0; the selection is still the first run, now in row 1
    assert_clean(app)
    assert [h.value for h in app.subheader][:1] == [plain(store.get(ids[0]).name)]
    assert app.session_state["runs_selected"] == [ids[0]] and newer.id != ids[0]


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


def test_train_page_survives_its_run_being_deleted(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    app.session_state["handoff_watched_job"] = ids[0]  # dashboard.state.watch_job's key
    store.delete(ids[0])
    app.run()
    goto(app, "train")
    assert_clean(app)
    assert any("That run was deleted" in i.value for i in app.info)


def test_preset_choice_survives_a_visit_to_another_page(app):
    app.run()
    goto(app, "train")
    app.selectbox(key="train_preset").set_value("best").run()
    goto(app, "home")
    goto(app, "train")
    assert app.selectbox(key="train_preset").value == "best"
    assert app.selectbox(key="train_model").value == "resnet"


def test_comparing_runs_with_the_same_name(app, tmp_path):
    store = RunStore(tmp_path / "home")
    for lr in (1e-3, 3e-3):  # both get the default name "seed-cnn on digits"
        cfg = TrainConfig(dataset="digits", epochs=2, limit_batches=5, lr=lr)
        execute_run(store, create_run(store, cfg).id)
    app.session_state[runs_table(store)] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    app.run()
    goto(app, "runs")
    assert_clean(app)
    assert any("Comparing 2 runs" in s.value for s in app.subheader)
    diff = next(d.value for d in app.dataframe if "lr" in d.value.index)
    assert len(diff.columns) == 2


def test_two_runs_that_read_alike_can_be_told_apart_in_the_model_pickers(app, tmp_path):
    store = RunStore(tmp_path / "home")
    cfg = TrainConfig(dataset="digits", epochs=1, limit_batches=3)  # the same run twice: same name, same accuracy
    ids = [execute_run(store, create_run(store, cfg).id).id for _ in range(2)]
    app.run()
    options = app.selectbox(key="app_run").options
    assert len(set(options)) == len(options) == 3
    assert sorted(o.rsplit(" · ", 1)[1] for o in options[1:]) == sorted(i[-6:] for i in ids)


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


def test_train_form_explains_a_missing_dataset(app, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path / "no-data"))
    app.run()
    goto(app, "train")
    app.selectbox(key="train_dataset").set_value("mnist").run()
    app.selectbox(key="train_preset").set_value("best").run()  # augmentation on: the preview needs the data
    assert not app.exception
    assert any("not in" in e.value and "DIGIT_LAB_DATA" in e.value for e in app.error)
    assert app.button(key="train_start").disabled


def test_a_click_on_a_confusion_cell_selects_that_cell():
    from dashboard.widgets import confusion_figure, selected_cell

    fig = confusion_figure(np.eye(10), [str(i) for i in range(10)], normalized=False)
    markers = fig.data[1]
    clicked = {"selection": {"points": [{"x": markers.x[38], "y": markers.y[38], "customdata": markers.customdata[38]}]}}
    assert selected_cell(clicked) == (3, 8)  # row 3 (true), column 8 (predicted)
    assert selected_cell({"selection": {"points": []}}) is None


def test_train_page_shows_the_latest_run_after_a_reload(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=2)
    app.run()
    goto(app, "train")
    assert_clean(app)
    newest = store.get(ids[1])
    assert any(f"**{plain(newest.name)}**" in m.value and "latest run" in m.value and "completed" in m.value
               for m in app.markdown)
    assert not any("No training yet" in i.value for i in app.info)
    titles = [c.proto.spec for c in app.get("plotly_chart")]
    assert sum("Learning-rate schedule" in t for t in titles) == 1  # one LR chart on the page, not two
    loss = json.loads(next(t for t in titles if "Loss and learning rate" in t))
    curve = next(trace for trace in loss["data"] if trace["name"] == "train loss (step)")
    rows = store.read_metrics(newest.id)  # the finished run's steps, kept with its epochs, as seen live
    x = np.frombuffer(base64.b64decode(curve["x"]["bdata"]), dtype=curve["x"]["dtype"])  # plotly's typed array
    assert x.tolist() == [p[0] for row in rows for p in row["steps"]] == list(range(1, 11))


def test_train_page_after_a_reload_draws_the_curve_of_a_run_that_diverged_in_its_first_epoch(app, tmp_path):
    store = RunStore(tmp_path / "home")
    cfg = TrainConfig(model="seed-cnn", dataset="digits", epochs=2, limit_batches=5, optimizer="sgd", lr=10.0)
    record = execute_run(store, create_run(store, cfg, name="too hot").id)
    assert record.status == "diverged" and store.read_metrics(record.id) == []  # no epoch finished
    app.run()
    goto(app, "train")
    assert not app.exception
    assert [e.value for e in app.error] == [record.message] and "Lower the learning rate" in record.message
    loss = next(json.loads(c.proto.spec) for c in app.get("plotly_chart") if "Loss and learning rate" in c.proto.spec)
    curve = next(trace for trace in loss["data"] if trace["name"] == "train loss (step)")
    x = np.frombuffer(base64.b64decode(curve["x"]["bdata"]), dtype=curve["x"]["dtype"])
    assert x.tolist() == [p[0] for p in record.unfinished_steps] and x[0] == 1


def test_cancelled_runs_are_not_offered_as_models_unless_asked_for(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    cfg = TrainConfig(model="seed-cnn", dataset="digits", epochs=2, limit_batches=5)
    steps = iter(range(100))
    stopped = execute_run(store, create_run(store, cfg, name="stopped early").id, should_stop=lambda: next(steps) >= 2)
    assert stopped.status == "cancelled" and stopped.weights_sha256
    app.run()
    assert not any("stopped early" in option for option in app.selectbox(key="app_run").options)
    app.toggle(key="app_include_unfinished").set_value(True).run()
    assert any("stopped early (cancelled)" in option for option in app.selectbox(key="app_run").options)


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

"""The Train page: the form and its checks, presets, a live job, and what it shows after a reload."""
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
from tests.dashboard.conftest import assert_clean, goto
from tests.dashboard.pages_helpers import finished_runs, runs_table


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
    # seed-cnn also trains on the validation images, as the article did: its validation figure is labelled so
    assert "Val accuracy (trained on)" in [m.label for m in app.metric] and "Val accuracy" not in [m.label for m in app.metric]
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


def test_train_form_explains_a_missing_dataset(app, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_DATA", str(tmp_path / "no-data"))
    app.run()
    goto(app, "train")
    app.selectbox(key="train_dataset").set_value("mnist").run()
    app.selectbox(key="train_preset").set_value("best").run()  # augmentation on: the preview needs the data
    assert not app.exception
    assert any("not in" in e.value and "DIGIT_LAB_DATA" in e.value for e in app.error)
    assert app.button(key="train_start").disabled


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


def test_a_second_start_queues_behind_the_run_in_view_and_stop_stops_that_run(app, tmp_path):
    # A tester pressed Start again during a run: the panel switched to the new, queued run, and Stop cancelled it while
    # the first trained on out of sight. Now the first stays in view with its Stop; the second is listed under it.
    from dashboard.state import job_manager

    app.run()
    goto(app, "train")
    app.selectbox(key="train_preset").set_value("seed-cnn").run()
    app.selectbox(key="train_dataset").set_value("digits").run()
    app.number_input(key="train_repeat").set_value(40).run()  # long enough to still train while we look
    app.selectbox(key="train_precision").set_value("fp32").run()
    app.text_input(key="train_name").set_value("first").run()
    app.button(key="train_start").click().run()
    app.text_input(key="train_name").set_value("second").run()
    app.button(key="train_start").click().run()
    assert_clean(app)
    store = RunStore(tmp_path / "home")
    first, second = sorted(store.list(), key=lambda r: r.created)
    assert (first.name, second.name) == ("first", "second")
    try:
        heads = [m.value for m in app.markdown if m.value.startswith("**")]
        assert heads[0].startswith("**first**")  # the run in view is still the first ...
        assert any(h.startswith("**second**") and "queued, position 1" in h for h in heads)  # ... the second under it
        app.button(key="train_stop").click().run()  # the Stop beside the progress stops the run in view
        assert job_manager().get(first.id).snapshot()["stop_requested"]
        assert not job_manager().get(second.id).snapshot()["stop_requested"]
        app.button(key=f"train_stop_{second.id}").click().run()  # and the listed run has its own
        assert job_manager().get(second.id).snapshot()["stop_requested"]
    finally:
        for job in job_manager().active():
            job_manager().stop(job.id)

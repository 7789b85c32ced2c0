"""Runs & compare: rename, delete, compare, the selection, and which runs are offered as models."""
from __future__ import annotations

import json

import pytest

from core.training.config import TrainConfig
from core.training.experiment import create_run, execute_run
from core.runs import RunStore
from dashboard.widgets import plain
from tests.dashboard.conftest import assert_clean, goto
from tests.dashboard.pages_helpers import finished_runs, runs_table


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
    assert app.text_input(key=f"runs_rename_{newest}").max_chars == 120  # as much as a name holds: none cut silently
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
    assert not [c for c in app.caption if "also trained on the validation images" in c.value]
    store.update(ids[0], config={**store.get(ids[0]).config, "train_on_val": True})  # as the article's presets do
    app.run()
    note = next(c.value for c in app.caption if "also trained on the validation images" in c.value)
    assert ids[0][-6:] in note and ids[1][-6:] not in note  # its curve is not held out: the page says which


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

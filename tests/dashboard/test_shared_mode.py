"""Shared-server mode (DIGIT_LAB_SHARED=1): visitors manage only their own runs, caps refuse with a sentence,
the admin token unlocks everything. Two AppTest sessions on one server stand for two visitors."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.policy import Policy
from core.runs import RunStore
from tests.dashboard.conftest import APP, assert_clean, goto
from tests.dashboard.pages_helpers import runs_table


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_SHARED", "1")
    monkeypatch.setenv("DIGIT_LAB_ADMIN_TOKEN", "open sesame")
    monkeypatch.setenv("DIGIT_LAB_MAX_EPOCHS", "3")
    monkeypatch.setenv("DIGIT_LAB_MAX_QUEUED", "1")


def _start(at, epochs=2, name="mine"):
    goto(at, "train")
    at.selectbox(key="train_preset").set_value("seed-cnn").run()
    at.selectbox(key="train_dataset").set_value("digits").run()
    at.number_input(key="train_epochs").set_value(epochs).run()
    # long enough to still be training when others look: fp32, since bf16 on a CPU with AMX trains this 1.5x faster
    at.number_input(key="train_repeat").set_value(40).run()  # 57,480 images: under the 60,000 cap
    at.selectbox(key="train_precision").set_value("fp32").run()
    at.text_input(key="train_name").set_value(name).run()
    at.button(key="train_start").click().run()


def _select_only_run(at, store):
    goto(at, "runs")
    at.session_state[runs_table(store)] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    return at.run()


def test_a_second_visitor_cannot_stop_or_delete_the_first_visitors_run(app, shared, tmp_path):
    app.run()
    _start(app)
    assert_clean(app)
    store = RunStore(tmp_path / "home")
    (run,) = store.list()
    assert app.button(key="train_stop")  # the owner sees Stop
    other = AppTest.from_file(APP, default_timeout=120)  # a second browser session, same server
    other.run()
    goto(other, "train")
    other.session_state["handoff_watched_job"] = run.id
    other.run()
    assert "train_stop" not in [b.key for b in other.button]
    assert any("Started by another visitor" in c.value for c in other.caption)
    _select_only_run(other, store)
    assert other.button(key="runs_delete").disabled and other.button(key="runs_rename_save").disabled
    assert any("Another visitor started this run" in c.value for c in other.caption)
    # the owner stops it; the other visitor still cannot delete it, the admin can
    goto(app, "train")
    app.button(key="train_stop").click().run()
    from dashboard.state import job_manager

    job_manager().wait(run.id, timeout=120)
    _select_only_run(other, store)
    assert other.button(key="runs_delete").disabled
    other.text_input(key="app_admin_token").set_value("wrong").run()
    assert any("not the admin token" in e.value for e in other.error)
    other.text_input(key="app_admin_token").set_value("open sesame").run()
    _select_only_run(other, store)
    assert_clean(other)
    assert any("you are the admin" in c.value for c in other.sidebar.caption)
    other.checkbox(key=f"runs_delete_sure_{run.id}").check().run()
    other.button(key="runs_delete").click().run()
    assert store.list() == []


def test_the_caps_refuse_with_a_sentence(app, shared, tmp_path):
    app.run()
    _start(app, epochs=5)
    assert any("at most 3 epochs per run (asked for 5)" in e.value for e in app.error)
    assert RunStore(tmp_path / "home").list() == []
    _start(app, epochs=2, name="first")
    assert_clean(app)
    _start(app, epochs=2, name="second")  # one queued or training run per visitor on this server
    assert any("allows 1 at a time" in e.value for e in app.error)
    assert [r.name for r in RunStore(tmp_path / "home").list()] == ["first"]
    from dashboard.state import job_manager

    for job in job_manager().active():
        job_manager().stop(job.id)


def test_an_experiment_needs_the_admin_on_a_shared_server(app, shared):
    app.run()
    goto(app, "invest")
    app.button(key="invest_launch").click().run()
    assert any("only the admin can launch" in e.value for e in app.error)


def test_the_policy_is_read_from_the_environment_and_off_by_default():
    assert not Policy.from_env({}).shared
    assert Policy.from_env({}).may_manage({"extra": {"visitor": "a"}}, "b", admin=False)
    policy = Policy.from_env({"DIGIT_LAB_SHARED": "1", "DIGIT_LAB_MAX_TRAIN_IMAGES": "1000"})
    assert policy.shared and policy.max_train_images == 1000 and not policy.is_admin_token("")
    with pytest.raises(Exception, match="at most 1,000 training images"):
        policy.check_start(1, 5000, 0, admin=False)
    policy.check_start(1, 5000, 0, admin=True)  # the admin is not capped
    with pytest.raises(Exception, match="whole number"):
        Policy.from_env({"DIGIT_LAB_MAX_EPOCHS": "lots"})

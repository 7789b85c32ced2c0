"""AppTest fixtures: a fresh server-wide state per test and the canvas payload helper."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

APP = str(REPO / "dashboard" / "frame.py")  # the script that dashboard/app.py's st.App serves


@pytest.fixture
def app(tmp_path, monkeypatch):
    """An AppTest of the whole app over an empty run store (cached resources cleared)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DIGIT_LAB_HOME", str(tmp_path / "home"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=120)
    yield at
    from dashboard.state import job_manager

    for job in job_manager().active():  # never leave a worker training into the next test
        job_manager().stop(job.id)
    st.cache_resource.clear()


def canvas_payload(rgba: np.ndarray) -> dict:
    """What streamlit-drawable-canvas sends back for a drawing: its PNG as a data URL."""
    buffer = io.BytesIO()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": url}, "backgroundFit": None}


def goto(at, page: str):
    at.switch_page(f"app_pages/{page}.py")
    return at.run()


def assert_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_tab(at, key: str, label: str):
    """Switch a tracked `st.tabs(key=...)` to the tab named `label` (AppTest has no click for tabs)."""
    at.session_state[key] = label
    return at.run()

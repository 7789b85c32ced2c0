"""A page's elements reach the browser in batches (dashboard/events.py): in order, with one wake-up of the event loop
per batch, on a real Streamlit AppSession."""
from __future__ import annotations

import asyncio
import logging
import threading
from unittest.mock import MagicMock

import pytest
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.script_data import ScriptData
from streamlit.runtime.scriptrunner import ScriptRunnerEvent

from dashboard import events


@pytest.fixture
def restored(monkeypatch):
    """AppSession as Streamlit ships it, and again after the test."""
    monkeypatch.setattr(AppSession, "_on_scriptrunner_event", AppSession._on_scriptrunner_event)
    if getattr(AppSession._on_scriptrunner_event, "batched", False):  # another test's server.prepare() patched it
        monkeypatch.setattr(AppSession, "_on_scriptrunner_event", AppSession._on_scriptrunner_event.__wrapped__)


def _elements_from_a_script_thread(n: int) -> tuple[list[str], int]:
    """`n` markdown elements sent from another thread, as a script does: the texts the browser queue gets, in its
    order, and how many times the event loop was woken for them."""
    async def run() -> tuple[list[str], int]:
        session = AppSession(script_data=ScriptData("app.py", False), uploaded_file_manager=MagicMock(),
                             script_cache=MagicMock(), message_enqueued_callback=None, user_info={"email": "t"})
        runner = session._scriptrunner = MagicMock()  # events of any other runner are ignored
        wake_ups, call_soon = [], session._call_soon_on_event_loop
        session._call_soon_on_event_loop = lambda callback: (wake_ups.append(callback), call_soon(callback))

        def script() -> None:
            for i in range(n):
                msg = ForwardMsg()
                msg.metadata.delta_path[:] = [0, i]
                msg.delta.new_element.markdown.body = f"element {i}"
                session._on_scriptrunner_event(runner, ScriptRunnerEvent.ENQUEUE_FORWARD_MSG, forward_msg=msg)

        thread = threading.Thread(target=script)
        thread.start()
        thread.join()  # the loop is not running meanwhile: every event waits, as behind a busy loop thread
        await asyncio.sleep(0.05)
        sent = [m.delta.new_element.markdown.body for m in session.flush_browser_queue()]
        session.shutdown()
        return sent, len(wake_ups)

    return asyncio.run(run())


def test_a_sessions_elements_reach_the_browser_queue_in_order_with_one_wake_up_per_batch(restored):
    assert events.batch_script_events() and events.batch_script_events()  # on, and once only
    sent, wake_ups = _elements_from_a_script_thread(50)
    assert sent == [f"element {i}" for i in range(50)]
    assert wake_ups == 1  # Streamlit as shipped: 50 (the next test)


def test_off_by_the_environment_streamlit_wakes_the_loop_once_per_element(restored, monkeypatch):
    monkeypatch.setenv(events.BATCH_EVENTS, "0")
    assert not events.batch_script_events()
    sent, wake_ups = _elements_from_a_script_thread(50)
    assert sent == [f"element {i}" for i in range(50)] and wake_ups == 50


def test_a_streamlit_of_another_shape_is_left_as_it_is(restored, monkeypatch):
    monkeypatch.setattr(AppSession, "_handle_scriptrunner_event_on_event_loop", lambda self, event: None)
    shipped = AppSession._on_scriptrunner_event
    assert not events.batch_script_events()
    assert AppSession._on_scriptrunner_event is shipped


def test_a_failing_event_is_logged_and_the_batch_goes_on(caplog):
    handled, loop = [], []

    def handle(n: int) -> None:
        if n == 2:
            raise ValueError("broken element")
        handled.append(n)

    batcher = events.EventBatcher(handle, loop.append)
    for n in range(5):
        batcher.submit(n)
    assert len(loop) == 1  # one drain asked for
    with caplog.at_level(logging.ERROR, logger=events.__name__):
        loop.pop()()
    assert handled == [0, 1, 3, 4] and "Handling a script event failed" in caplog.text
    batcher.submit(5)  # after a drain the next event asks for a new one
    assert len(loop) == 1
    loop.pop()()
    assert handled[-1] == 5

"""How a page's output travels from its script thread to the browser: in batches, one wake-up of the server's event
loop per batch instead of one per element.

Streamlit hands every element a script draws (each button, column, chart: about 30 for one drawing read on Draw &
predict) from the script's thread to the event loop with `call_soon_threadsafe`. Each hand-off writes to the
loop's wake-up pipe, which releases the interpreter (GIL) to the loop's thread; the script then waits to get it
back. With a crowd's browsers on the same cores, either thread may wait for a core while the other holds the
interpreter: under the load benchmark's 10 sessions these waits were up to half of a drawing's server time. Batched,
the script queues its events while a hand-off is pending, and the loop handles all of them, in order, when it
wakes (benchmarks/load.py, browsers behind the server: p95 219–280 ms before, 170–184 ms after).

`DIGIT_LAB_BATCH_EVENTS=0` turns it off. If Streamlit's internals change shape, nothing is changed and Streamlit
works as shipped.
"""
from __future__ import annotations

import collections
import inspect
import logging
import os
import threading
from typing import Any, Callable

BATCH_EVENTS = "DIGIT_LAB_BATCH_EVENTS"
_LOG = logging.getLogger(__name__)
_ATTR = "_digit_lab_events"  # the session's EventBatcher
_CREATE = threading.Lock()


class EventBatcher:
    """Events submitted from any thread, handled in submission order by `handle` on the loop: `call_soon` (thread
    safe) is asked to run `drain` once per batch, not once per event."""

    def __init__(self, handle: Callable[..., None], call_soon: Callable[[Callable[[], None]], None]) -> None:
        self._handle, self._call_soon = handle, call_soon
        self._pending: collections.deque[tuple[tuple, dict]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def submit(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self._pending.append((args, kwargs))
            if self._scheduled:
                return  # the pending drain will handle this one too
            self._scheduled = True
        try:
            self._call_soon(self.drain)
        except BaseException:
            with self._lock:
                self._scheduled = False
            raise

    def drain(self) -> None:
        """(On the loop.) Handle every event submitted so far, and those submitted while it runs."""
        while True:
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
                args, kwargs = self._pending.popleft()
            try:
                self._handle(*args, **kwargs)
            except Exception:  # noqa: BLE001 - as asyncio does for one callback: log it, go on with the next
                _LOG.exception("Handling a script event failed")


def batch_script_events() -> bool:
    """Make every Streamlit session of this process hand its script events to the loop in batches. True when on
    (also when it already was); False when turned off or when Streamlit's session no longer has the expected shape."""
    if os.environ.get(BATCH_EVENTS, "1") == "0":
        return False
    from streamlit.runtime.app_session import AppSession

    current = getattr(AppSession, "_on_scriptrunner_event", None)
    if getattr(current, "batched", False):
        return True
    handle = getattr(AppSession, "_handle_scriptrunner_event_on_event_loop", None)
    if current is None or handle is None or not hasattr(AppSession, "_call_soon_on_event_loop") or \
            list(inspect.signature(current).parameters) != list(inspect.signature(handle).parameters):
        return False  # not the Streamlit this was written for: leave it as it is

    def on_scriptrunner_event(self: AppSession, *args: Any, **kwargs: Any) -> None:
        batcher = self.__dict__.get(_ATTR)
        if batcher is None:
            with _CREATE:
                batcher = self.__dict__.setdefault(_ATTR, EventBatcher(
                    self._handle_scriptrunner_event_on_event_loop, self._call_soon_on_event_loop))
        batcher.submit(*args, **kwargs)

    on_scriptrunner_event.batched = True  # type: ignore[attr-defined]
    on_scriptrunner_event.__wrapped__ = current  # type: ignore[attr-defined] - Streamlit's own, as shipped
    on_scriptrunner_event.__doc__ = current.__doc__
    AppSession._on_scriptrunner_event = on_scriptrunner_event
    return True

"""`streamlit` with a stopwatch on every script run, for the load benchmark's server-time figures.

    python benchmarks/server_timing.py LOG.jsonl run dashboard/app.py [streamlit options]
Runs Streamlit's own command line unchanged, except that each script run appends one JSON line to LOG.jsonl:
    {"session": id, "received": t, "start": t, "end": t, "predicted": bool}   (time.monotonic() seconds)
`received` is when the server took the oldest rerun request this run answered off the websocket (so `end -
received` is the server's time for a request: its queue plus the script), `start`/`end` bracket the script run
(reruns that interrupt it are folded in, as the visitor waits for them too), and `predicted` says whether the run
read a drawing (core.inference.predict.Predictor.predict was called in it). Nothing in the app changes, and
nothing of the app is imported before its first run (importing torch here would hide its cost from the first page):
the predict is noted from the first run after the one that imported it (a page's first run never reads a drawing).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict

_lock = threading.Lock()
_pending: dict[str, list[float]] = defaultdict(list)  # session id -> arrival times of rerun requests not yet answered
_local = threading.local()


def install(log_path: str) -> None:
    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    log = open(log_path, "a", buffering=1)
    handle_backmsg, run_script = AppSession.handle_backmsg, ScriptRunner._run_script

    def timed_backmsg(self, msg) -> None:
        if msg.WhichOneof("type") == "rerun_script":
            with _lock:
                _pending[self.id].append(time.monotonic())
        handle_backmsg(self, msg)

    def timed_run(self, rerun_data) -> None:
        _local.predicted = False
        note_predictions()
        start = time.monotonic()
        try:
            run_script(self, rerun_data)
        finally:
            end = time.monotonic()
            with _lock:
                waiting = _pending[self._session_id]
                answered = [t for t in waiting if t <= end]
                _pending[self._session_id] = [t for t in waiting if t > end]
            received = min(answered, default=start)
            log.write(json.dumps({"session": self._session_id, "received": received, "start": start, "end": end,
                                  "predicted": _local.predicted}) + "\n")

    def note_predictions() -> None:
        predictor = getattr(sys.modules.get("core.inference.predict"), "Predictor", None)  # None: not (yet) imported
        with _lock:
            if predictor is None or getattr(predictor.predict, "noted", False):
                return
            predict = predictor.predict

            def noted_predict(self, image):
                _local.predicted = True
                return predict(self, image)

            noted_predict.noted = True
            predictor.predict = noted_predict

    AppSession.handle_backmsg = timed_backmsg
    ScriptRunner._run_script = timed_run


if __name__ == "__main__":
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    install(sys.argv[1])
    from streamlit.web.cli import main

    sys.argv = ["streamlit", *sys.argv[2:]]
    sys.exit(main())

"""Digit Lab's entry point: `streamlit run dashboard/app.py`.

The app is declared as an `st.App` so that the server prepares, once and before it answers anyone, what every
visitor's first page needs: torch, plotly and pandas imported, the data loaded and summarised. Without this the
first visitor of a fresh server waited for all of it inside Home's first run. The frame and router every page
shares are in frame.py; the pages in app_pages/.
"""
from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))


@asynccontextmanager
async def lifespan(_app: st.App):
    from dashboard import server

    server.prepare()  # synchronous on purpose: the server answers its first visitor ready
    yield


app = st.App("frame.py", lifespan=lifespan)

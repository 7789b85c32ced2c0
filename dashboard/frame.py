"""The page router (st.navigation) and the frame every page shares: the script dashboard/app.py's `st.App` runs for
each visitor (`streamlit run dashboard/app.py`). The sidebar shows the dataset in use (with a notice
when the built-in fallback digits stand in for MNIST), the run the other pages work with, and the device.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.data.datasets import DATASETS  # noqa: E402
from core.errors import DigitLabError  # noqa: E402
from dashboard import server, state  # noqa: E402 - importing server sets the server's torch threads (AppTest runs
server.prepare()  # this script without app.py's lifespan; a server has done this before its first visitor: no-op)

st.set_page_config(page_title="Digit Lab", page_icon=":material/draw:", layout="wide")
# Less empty space above each page's title (on a 1366×768 projector the canvas and its answer must fit) and in the
# sidebar's head, so its model picker and toggle sit below the ten pages' links without scrolling at that size.
st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }"
        "[data-testid='stSidebarHeader'] { height: 2.5rem; margin-bottom: 0; }"
        "[data-testid='stSidebarUserContent'] { padding-top: 0.5rem; }</style>")

PAGES = {
    "": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Train": [
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("app_pages/runs.py", title="Runs & compare", icon=":material/leaderboard:", url_path="runs"),
        st.Page("app_pages/invest.py", title="Invest", icon=":material/savings:", url_path="invest"),
    ],
    "Use": [
        st.Page("app_pages/predict.py", title="Draw & predict", icon=":material/draw:", url_path="predict"),
        st.Page("app_pages/drawings.py", title="Drawings", icon=":material/photo_library:", url_path="drawings"),
    ],
    "Understand": [
        st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/fact_check:", url_path="evaluate"),
        st.Page("app_pages/explain.py", title="Explain", icon=":material/lightbulb:", url_path="explain"),
        st.Page("app_pages/robustness.py", title="Robustness & privacy", icon=":material/shield:", url_path="robustness"),
        st.Page("app_pages/under_the_hood.py", title="Under the hood", icon=":material/functions:", url_path="under-the-hood"),
    ],
}


def sidebar() -> None:
    with st.sidebar:
        chosen = st.selectbox("Dataset", list(DATASETS), format_func=state.dataset_title, key="app_dataset")
        resolved, notice = state.resolved_dataset(chosen)
        st.session_state["app_dataset_resolved"] = resolved
        if notice:
            st.warning(notice, icon=":material/info:")
        state.apply_selected_model()  # a hand-off from another page (e.g. Explain this mistake)
        names = state.source_names()
        if st.session_state.get("app_run") not in names:
            st.session_state["app_run"] = state.STARTER
        run = st.selectbox("Model", list(names), key="app_run", format_func=names.get,
                           help="The model Draw & predict, Evaluate and Explain use.")
        try:
            own = state.model_dataset(run)
        except DigitLabError:  # its weights are gone: the pages that load it say so
            own = resolved
        if own != resolved:  # e.g. Fashion-MNIST chosen, the digit starter still picked
            st.info(f"This model reads {state.dataset_title(own)}: Draw & predict, Evaluate and Explain use that. "
                    f"For {state.dataset_title(resolved)}, train a model on it and pick it here.",
                    icon=":material/info:")
        st.toggle("Include stopped and failed runs", key="app_include_unfinished",
                  help="Off: only runs that trained to the end are offered as models and compared.")
        st.caption(state.device_label())
        if state.policy().shared:
            admin_sign_in()


def admin_sign_in() -> None:
    """Shared-server mode: visitors manage their own runs; the admin token unlocks everything."""
    if state.is_admin():
        st.caption(":material/admin_panel_settings: Shared server · you are the admin")
        return
    st.caption("Shared server: you can stop, rename and delete the runs you start.")
    token = st.text_input("Admin token", type="password", key="app_admin_token",
                          help="Given by whoever runs this server (DIGIT_LAB_ADMIN_TOKEN).")
    if token:
        if state.sign_in_admin(token):
            st.rerun()
        st.error("That is not the admin token.", icon=":material/lock:")


page = st.navigation({k: v for k, v in PAGES.items() if v})
sidebar()
page.run()
server.warm_up()  # once per server, after its first page: Evaluate and Explain then open quickly

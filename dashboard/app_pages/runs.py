"""Runs & compare: every run in the store; rename, delete, download; compare and weigh cost against benefit."""
import datetime as dt

import pandas as pd
import streamlit as st

from core.insight.compare import config_diff, cost_benefit_rows, model_card, versus_cheapest
from core.errors import DigitLabError
from core.runs import RESUMABLE, STATUSES
from core.models.zoo import ZOO
from dashboard import state, widgets

store = state.run_store()
store.recover_interrupted()  # a CLI run killed while this server runs shows as interrupted, not running for ever
st.title("Runs & compare")

f1, f2, f3 = st.columns(3)
status = f1.selectbox("Status", ["all", *STATUSES], key="runs_status")
model = f2.selectbox("Model", ["all", *ZOO], key="runs_model")
search = f3.text_input("Name contains", key="runs_search")
records = store.list(status=None if status == "all" else status, model=None if model == "all" else model)
records = [r for r in records if search.lower() in r.name.lower()]
if not records:
    st.info("No runs match. Train one on the Train page.")
    st.page_link("app_pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

counts = {s: sum(r.status == s for r in records) for s in STATUSES}
st.caption(f"{len(records)} run{'s' if len(records) != 1 else ''}: "
           + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
table = pd.DataFrame([{
    "name": r.name, "model": r.model, "dataset": r.dataset, "status": r.status,
    "test accuracy": None if r.test_accuracy is None else 100 * r.test_accuracy, "params": r.params,
    "train time (s)": r.timings.get("train_seconds"), "created": dt.datetime.fromtimestamp(r.created),
    "id": r.id} for r in records])
# A table's selection is row numbers. Keyed by the rows shown, the table starts afresh when they change (a delete, a
# filter, a new run), with the runs selected before still selected: a selection never lands on whichever run moved
# into a selected row (after a delete, the next run, with its Delete button open)
selected = set(st.session_state.get("runs_selected", []))
picked = st.dataframe(
    table, key=state.runs_table_key(records), on_select="rerun", selection_mode="multi-row", hide_index=True,
    selection_default={"selection": {"rows": [i for i, r in enumerate(records) if r.id in selected]}},
    placeholder="–",  # a stopped or diverged run has no test accuracy: a dash, not the word None
    column_config={"test accuracy": st.column_config.NumberColumn(format="%.2f%%"),  # 99.10%, as 98.57% beside it
                   "params": st.column_config.NumberColumn(format="localized"),  # 215,194, not 215194
                   "train time (s)": st.column_config.NumberColumn(format="%.1f"),
                   "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")})
chosen = [records[i] for i in picked.selection.rows if i < len(records)] if picked is not None else []
st.session_state["runs_selected"] = [r.id for r in chosen]
st.caption("Select one run to manage it, several to compare them.")

# -- one run: manage ------------------------------------------------------------------------------------
if len(chosen) == 1:
    run = chosen[0]
    st.subheader(widgets.plain(run.name))
    if run.message:
        (st.error if run.status in ("failed", "diverged") else st.info)(run.message)
    mine = state.may_manage(run)
    if not mine:
        st.caption("Another visitor started this run: on this shared server only they or the admin can rename, "
                   "resume or delete it.")
    c1, c2, c3 = st.columns(3)
    with c1:
        new_name = st.text_input("Rename", value=run.name, key=f"runs_rename_{run.id}", disabled=not mine,
                                 max_chars=120)  # what a run's name holds (core.runs.RunStore.rename), as Train's
        if st.button("Save name", key="runs_rename_save", disabled=not mine) and new_name.strip() != run.name:
            try:
                store.rename(run.id, new_name)
                st.rerun()
            except ValueError as error:
                widgets.error_box(error)
    weights_file = f"{run.id}.safetensors"  # the name the download gets and the model card states
    card = model_card(run, store.read_metrics(run.id), weights_file)
    with c2:
        if run.weights_sha256:
            st.download_button("Download weights (.safetensors)", store.weights_path(run.id).read_bytes(),
                               file_name=weights_file, mime="application/octet-stream",
                               key="runs_download_weights", on_click="ignore")
        st.download_button("Download model card (.md)", card, file_name=f"{run.id}-model-card.md",
                           mime="text/markdown", key="runs_download_card", on_click="ignore")
        if run.status in RESUMABLE and st.button("Resume training", key="runs_resume", disabled=not mine):
            try:
                state.resume_training(run)
            except DigitLabError as error:
                widgets.error_box(error)
            else:
                st.switch_page("app_pages/train.py")
    with c3:
        sure = st.checkbox("I want to delete this run and its weights", key=f"runs_delete_sure_{run.id}",
                           disabled=not mine)
        if st.button("Delete run", type="primary", disabled=not (sure and mine), key="runs_delete"):
            try:
                store.delete(run.id)
                st.toast(f"Deleted {widgets.plain(run.name)}")
                st.rerun()
            except ValueError as error:
                widgets.error_box(error)
    with st.expander("Model card"):
        st.markdown(card)

# -- several runs: compare ---------------------------------------------------------------------------
if len(chosen) >= 2:
    st.subheader(f"Comparing {len(chosen)} runs")
    label = {r.id: f"{r.name} · {r.id[-6:]}" for r in chosen}  # names repeat ("seed-cnn on mnist")
    histories = {label[r.id]: store.read_metrics(r.id) for r in chosen}
    histories = {k: v for k, v in histories.items() if v}
    left, right = st.columns(2)
    left.plotly_chart(widgets.overlay_figure(histories, "val_accuracy", "Validation accuracy"), key="runs_cmp_acc")
    right.plotly_chart(widgets.overlay_figure(histories, "val_loss", "Validation loss"), key="runs_cmp_loss")
    if trained_on_val := [widgets.plain(label[r.id]) for r in chosen if r.config.get("train_on_val")]:
        st.caption(f"{', '.join(trained_on_val)} also trained on the validation images (as the article did): "
                   "their validation curves are not held out, so they look better than they are; compare test "
                   "accuracy instead.")
    diff = config_diff(chosen)
    st.markdown("**Settings that differ**" if diff else "All settings are the same.")
    if diff:
        st.dataframe(pd.DataFrame(diff, index=[label[r.id] for r in chosen]).T.astype(str), key="runs_cmp_diff")

# -- cost against benefit ------------------------------------------------------------------------------
st.subheader("Is the bigger model worth it?")
pool = chosen if len(chosen) >= 2 else records
include = st.session_state.get("app_include_unfinished", False)
rows = cost_benefit_rows(pool, include_unfinished=include)
if len(rows) < 2:
    st.info("Finish at least two runs (for example the seed MLP and the best preset) to weigh accuracy against cost."
            + ("" if include else " Stopped and failed runs are left out; the sidebar's toggle brings them in."))
else:
    st.caption("Red points are Pareto-optimal: no other run is both cheaper and more accurate. "
               + ("Showing the selected runs." if len(chosen) >= 2 else "Showing all listed runs."))
    labels = {"train_seconds": "training time (s)", "params": "parameters", "flops": "FLOPs per image",
              "train_images": "training images"}
    cost = st.radio("Cost", list(labels), horizontal=True, key="runs_cost", format_func=labels.get)
    st.plotly_chart(widgets.cost_benefit_figure(rows, cost, labels[cost], log_x=cost != "train_images"),
                    key="runs_cost_chart")
    robust = [r for r in pool if r.metrics.get("robust_accuracy") is not None and r.test_accuracy is not None]
    if robust:
        st.plotly_chart(widgets.clean_vs_robust_figure([
            {"name": r.name, "clean": r.test_accuracy, "robust": r.metrics["robust_accuracy"],
             "eps": r.metrics.get("robust_eps"), "seconds": r.timings.get("train_seconds") or 0} for r in robust]),
            key="runs_robust_chart")
    verdict = versus_cheapest(rows, cost)
    if verdict is not None:
        st.markdown(f"**{widgets.plain(verdict['best']['name'])}** beats the cheapest run **{widgets.plain(verdict['base']['name'])}** by "
                    f"**{verdict['points']:+.2f} points** ({verdict['errors_cut']:.0%} fewer errors) for "
                    f"**{verdict['cost_ratio']:,.1f}×** the {labels[cost].removesuffix(' (s)')}.")

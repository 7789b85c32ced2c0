"""Drawings: the labelled drawing sets saved from Draw & predict or imported — browse, correct, score, retrain.

One set at a time (chosen at the top); each tab is one job: the gallery (filter, relabel, delete), how every model
reads the set, a confidence threshold for Draw & predict, fine-tuning on the set, and import / export as one zip.
"""
import re

import pandas as pd
import streamlit as st

from core.data.drawing_files import export_bytes, import_bytes, suggested_name
from core.data.drawing_parts import part_ids
from core.data.drawing_sets import DrawingSet
from core.errors import DigitLabError
from core.inference.drawing_scores import DIGIT_DATASETS, lowest_threshold, threshold_curve
from core.inference.metrics import class_report, confusion
from core.inference.weights import STARTER, model_source
from core.training.retrain import retrain_config
from dashboard import judging, state, widgets
from dashboard.drawing_gallery import gallery_tab

DIGITS = tuple(str(d) for d in range(10))
TABS = [":material/photo_library: Gallery", ":material/leaderboard: Scores", ":material/tune: Threshold",
        ":material/model_training: Retrain", ":material/import_export: Import & export"]
PARTS = {"all": "the whole set", "heldout": "the held-out half (never trained on)", "train": "the train half"}

sets = state.drawing_store()
store = state.run_store()
st.title("Drawings")


def set_controls(current: DrawingSet | None) -> None:
    """New set, and (for its creator or the admin) rename or delete the current one."""
    with st.popover("New set", icon=":material/create_new_folder:"):
        name = st.text_input("Name", key="drawings_new_name", max_chars=80, placeholder="e.g. Class 3B")
        if st.button("Create", key="drawings_create", type="primary"):
            try:
                state.use_drawing_set(sets.create_set(name, owner=state.visitor_id()).id)
                st.rerun()
            except DigitLabError as error:
                widgets.error_box(error)
    if current is None:
        return
    allowed = state.may_edit_set(current)
    with st.popover("Rename or delete", icon=":material/edit:", disabled=not allowed,
                    help=None if allowed else "Only the visitor who created this set, or the admin, can change it."):
        name = st.text_input("New name", current.name, key=f"drawings_rename_{current.id}", max_chars=80)
        if st.button("Rename", key="drawings_rename"):
            try:
                sets.rename_set(current.id, name)
                st.rerun()
            except DigitLabError as error:
                widgets.error_box(error)
        sure = st.checkbox(f"Yes, delete it and its {current.count:,} drawings", key="drawings_delete_sure")
        if st.button("Delete set", key="drawings_delete_set", disabled=not sure, icon=":material/delete:"):
            sets.delete_set(current.id)
            st.rerun()


def scored(current: DrawingSet, key: str, part: str):
    """The sidebar's (or another) model on the set, cached; None with a sentence shown when it cannot be scored."""
    try:
        src = model_source(store, key)
        if src.dataset not in DIGIT_DATASETS:
            st.info(f"{widgets.plain(src.name)}, the sidebar's model, was trained on {src.dataset}: it does not read "
                    "digits. Choose a digit model in the sidebar.", icon=":material/info:")
            return None, None
        return src, judging.set_score(current.id, judging.set_version(current.id), src.key, src.sha256, part)
    except DigitLabError as error:
        widgets.error_box(error)
        return None, None


def scores_tab(current: DrawingSet, part: str) -> None:
    runs = tuple((r.id, r.weights_sha256) for r in store.list(status="completed"))
    try:
        rows = judging.set_score_table(current.id, judging.set_version(current.id), runs, part)
    except DigitLabError as error:
        widgets.error_box(error)
        return
    sidebar = state.current_run_id()
    table = pd.DataFrame([{"": "◀ sidebar" if r["key"] == sidebar else "", "model": r["name"],
                           "architecture": r["model"] or "", "accuracy": r["accuracy"], "mistakes": r["mistakes"],
                           "drawings": r["n"], "note": r["error"] or ""} for r in rows])
    st.markdown(f"**Which model reads this handwriting best** — every finished digit model on {PARTS[part]}, best first:")
    st.dataframe(table, hide_index=True, key="drawings_score_table", height=min(38 + 35 * len(table), 260),
                 column_config={"accuracy": st.column_config.ProgressColumn("accuracy", format="percent",
                                                                            min_value=0.0, max_value=1.0)})
    src, score = scored(current, sidebar, part)
    if score is None:
        return
    preds = score.predictions
    report = class_report(score.labels, preds)
    n = current.count if part == "all" else score.n
    st.subheader(f"{widgets.plain(src.name)} on {n:,} drawing{'' if n == 1 else 's'}", anchor=False)
    st.caption("The sidebar's model. Choose another there.")
    m = st.columns(4)
    m[0].metric("Accuracy", f"{score.accuracy:.1%}")
    m[1].metric("Mistakes", f"{len(score.mistakes):,}")
    m[2].metric("Macro F1", f"{report.macro['f1']:.3f}")
    m[3].metric("Lowest recall", f"{min(r for r, n in zip(score.recall, score.support) if n):.0%}")
    with st.expander("Per-class precision, recall and F1"):
        st.dataframe(pd.DataFrame(report.per_class).assign(**{"class": list(DIGITS)}), hide_index=True,
                     key="drawings_report")
    matrix_col, mistakes_col = st.columns([1, 1])
    normalized = matrix_col.toggle("Normalise rows (recall per class)", key="drawings_normalize")
    matrix = confusion(score.labels, preds, 10, normalize=True) if normalized else score.confusion
    event = matrix_col.plotly_chart(widgets.confusion_figure(matrix, DIGITS, normalized), key="drawings_confusion",
                                    on_select="rerun", selection_mode="points")
    cell = widgets.selected_cell(event)
    with mistakes_col:
        if cell is not None:
            picked = [i for i in range(score.n) if score.labels[i] == cell[0] and preds[i] == cell[1]]
            st.markdown(f"**{len(picked)}** drawings are **{cell[0]}** and were read as **{cell[1]}**:")
        else:
            picked = list(score.mistakes)
            st.markdown("**Mistakes**, most confident first (click a cell of the matrix for its drawings):")
        mistakes_gallery(src.key, score, picked)


def mistakes_gallery(key: str, score, positions: list[int], limit: int = 18) -> None:
    """Drawings (positions into `score`) with true and predicted labels, each with an Explain button."""
    if not positions:
        st.info("None here.", icon=":material/check:")
        return
    conf = score.probs.max(1)
    positions = sorted(positions, key=lambda i: -conf[i])
    cols = st.columns(4)
    for n, i in enumerate(positions[:limit]):
        drawing = sets.get(score.ids[i])
        with cols[n % 4]:
            st.image(widgets.digit_image(drawing.model_input, 3), width=84,
                     caption=f"#{drawing.id} true {score.labels[i]} · said {score.predictions[i]} {conf[i]:.0%}")
            if st.button("Explain", key=f"drawings_explain_{drawing.id}", icon=":material/lightbulb:"):
                state.send_to_explain(state.ExplainRequest("Drawings", drawing.model_input, key, int(score.labels[i])))
    if len(positions) > limit:
        st.caption(f"Showing {limit} of {len(positions)}.")


def threshold_tab(current: DrawingSet, part: str) -> None:
    src, score = scored(current, state.current_run_id(), part)
    if score is None:
        return
    st.markdown(f"Below a confidence threshold Draw & predict says *not sure — draw again* instead of guessing. "
                f"Here: where to put it so that **{widgets.plain(src.name)}** (the sidebar's model) keeps a chosen "
                f"accuracy on {PARTS[part]}.")
    left, right = st.columns([1, 2])
    target = left.slider("Accuracy to keep", 0.80, 1.0, 0.99, 0.005, format="%.3f", key="drawings_target")
    choice = lowest_threshold(score.probs, score.labels, target)
    left.info(choice.message, icon=":material/tune:")
    if choice.threshold is not None:
        a, b = left.columns(2)
        a.metric("Threshold", f"{choice.threshold:.1%}")
        b.metric("Answered", f"{choice.coverage:.0%}")
    if left.button("Use this threshold on Draw & predict", key="drawings_use_threshold", type="primary",
                   disabled=choice.threshold is None, icon=":material/arrow_forward:"):
        state.set_predict_threshold(choice.threshold)
        left.success(f"Draw & predict now says 'not sure' below {choice.threshold:.1%}.", icon=":material/check:")
        left.page_link("app_pages/predict.py", label="Open Draw & predict", icon=":material/draw:")
    curve = threshold_curve(score.probs, score.labels)
    right.plotly_chart(widgets.reject_figure(curve, choice.threshold or 0.0), key="drawings_reject")


def retrain_tab(current: DrawingSet) -> None:
    train_n, held_n = len(part_ids(sets, current.id, "train")), len(part_ids(sets, current.id, "heldout"))
    st.markdown(f"Fine-tune a model on its dataset plus this set's **train half** ({train_n} drawing"
                f"{'' if train_n == 1 else 's'}, each repeated "
                f"*factor* times per epoch); it is then measured on the **held-out half** ({held_n} drawing"
                f"{'' if held_n == 1 else 's'} it never "
                "saw) and on the test set, before and after. It trains as a normal run: watch it on the Train page.")
    runs = [r for r in state.finished_runs() if r.dataset in DIGIT_DATASETS]
    names = state.source_names(runs)
    keys = list(names)
    sidebar = state.current_run_id()
    c1, c2, c3 = st.columns([3, 1, 1])
    key = c1.selectbox("Start from", keys, index=keys.index(sidebar) if sidebar in keys else 0, format_func=names.get,
                       key="drawings_retrain_from")
    factor = c2.number_input("Factor", 1, 200, 20, key="drawings_retrain_factor",
                             help="How many times each drawing of the train half is seen per epoch.")
    epochs = c3.number_input("Epochs", 1, 10, 1, key="drawings_retrain_epochs")
    # Keyed by the model and the set: the suggested name follows "Start from" (a fixed key kept the first model's name,
    # and a run fine-tuned from one model was saved under another's)
    name = st.text_input("Run name", f"{names[key].split(' · ')[0]} + {current.name}"[:80],
                         key=f"drawings_retrain_name_{key}_{current.id}")
    if st.button("Fine-tune on this set", key="drawings_retrain", type="primary", disabled=train_n == 0,
                 icon=":material/model_training:",
                 help=None if train_n else "The set needs drawings in its train half first."):
        try:
            cfg = retrain_config(store, key, current.id, factor=int(factor), epochs=int(epochs))
            state.start_training(cfg, name=name, parent=None if key == STARTER else key)
            st.success("Fine-tuning queued.", icon=":material/check:")
        except DigitLabError as error:
            widgets.error_box(error)
    if state.watched_job():
        st.page_link("app_pages/train.py", label="Watch it on the Train page", icon=":material/model_training:")
    retrain_results(current)


def retrain_results(current: DrawingSet) -> None:
    """The set's fine-tuning runs with their before → after figures."""
    done = [r for r in store.list() if r.config.get("drawings") in (current.id, current.name)]
    if not done:
        return

    def pct(value) -> str:
        return "–" if value is None else f"{value:.1%}"

    called = {STARTER: "Starter model", **{r.id: r.name for r in store.list()}}  # "from": a name, not a run id
    rows = []
    for r in done:
        m = r.metrics
        start = r.config.get("init_from")
        rows.append({"run": r.name, "status": r.status, "from": called.get(start, start) if start else "scratch",
                     "factor": r.config.get("drawings_factor"),
                     "held-out drawings": f"{pct(m.get('drawings_accuracy_before'))} → {pct(m.get('drawings_accuracy'))}",
                     "test set": f"{pct(m.get('test_accuracy_before'))} → {pct(m.get('test_accuracy'))}"})
    st.markdown("**Fine-tuning runs on this set** (accuracy before → after):")
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="drawings_retrain_runs")


def files_tab(current: DrawingSet | None) -> None:
    if current is not None:
        stem = re.sub(r"[^\w.-]+", "-", current.name).strip("-.") or current.id
        st.download_button(f"Download {current.name} ({current.count:,} drawing{'' if current.count == 1 else 's'}) "
                           "as a zip", icon=":material/download:",
                           data=lambda: export_bytes(sets, current.id), file_name=f"{stem}.zip",
                           mime="application/zip", key="drawings_export", disabled=current.count == 0)
        st.caption("Canvases as PNGs, a CSV of labels, drawers and verdicts, and the exact model inputs: importing it "
                   "again gives the same drawings bit for bit.")
    version = st.session_state.get("drawings_upload_version", 0)
    upload = st.file_uploader("Import a zip: an exported set, or an ImageFolder (folders 0/ … 9/ of PNG or JPEG)",
                              type=["zip"], key=f"drawings_upload_{version}")
    into, name = st.columns([1, 1])
    options = (["current"] if current is not None else []) + ["new"]
    where = into.radio("Into", options, horizontal=True, key="drawings_import_into",
                       format_func=lambda o: f"this set ({current.name})" if o == "current" else "a new set")
    suggested = suggested_name(sets, upload.getvalue()) if upload is not None and where == "new" else None
    target = current.id if where == "current" else (
        name.text_input("New set's name", key="drawings_import_name", max_chars=80,
                        placeholder=suggested or "", help="Left empty, an exported set keeps its own name.").strip()
        or suggested or "")
    if st.button("Import", key="drawings_import", type="primary", disabled=upload is None, icon=":material/upload:"):
        try:
            result = import_bytes(sets, target, upload.getvalue(), upload.name, drawer=state.visitor_id(),
                                  owner=state.visitor_id())
        except DigitLabError as error:
            widgets.error_box(error)
            if "Nothing was imported" not in str(error):  # the refusals of core.data.drawing_files say it already
                st.caption("Nothing was imported.")
        else:
            state.use_drawing_set(result.set.id)
            st.session_state["drawings_upload_version"] = version + 1
            st.session_state["drawings_imported"] = (f"Imported {result.added:,} drawings into {result.set.name} "
                                                     f"({result.set.count:,} in all).")
            st.rerun()
    done = st.session_state.pop("drawings_imported", None)
    if done:
        st.success(done, icon=":material/check:")


all_sets = {s.id: s for s in sets.list_sets()}
set_labels = {k: f"{s.name} ({s.count:,})" for k, s in all_sets.items()}
set_box = widgets.changing_key("drawings_set", set_labels.values())  # a count changes with each save or delete
handed = state.current_drawing_set()  # the set last saved to on Draw & predict, or chosen here
if handed in all_sets and (set_box not in st.session_state or st.session_state.get("drawings_set_handed") != handed):
    st.session_state[set_box] = st.session_state["drawings_set_handed"] = handed
top = st.container(horizontal=True, vertical_alignment="bottom", gap="small")
current = None
if all_sets:
    chosen = top.selectbox("Drawing set", list(all_sets), key=set_box, width=320, format_func=set_labels.get,
                           on_change=lambda: state.use_drawing_set(st.session_state[set_box]))
    current = all_sets[chosen]
with top:
    set_controls(current)
if current is None:
    st.info("No drawing sets yet. On Draw & predict, draw a digit and save it with its true label — or create a set "
            "here, or import a zip below.", icon=":material/draw:")
    files_tab(None)
    st.stop()

per_label = " · ".join(f"{d}: {n}" for d, n in enumerate(current.per_label))
owner = "" if current.owner is None or not state.policy().shared else (
    " · created by you" if current.owner == state.visitor_id() else " · created by another visitor")
st.caption(f"{current.count:,} drawing{'' if current.count == 1 else 's'} ({per_label}){owner}")
wanted = state.take_drawings_tab()  # e.g. Evaluate's "Retrain on this set"
if wanted:
    st.session_state["drawings_tab"] = next(t for t in TABS if t.endswith(f" {wanted}"))
tabs = st.tabs(TABS, key="drawings_tab", on_change="rerun")
part = "all"
if widgets.is_open(tabs[0]):
    with tabs[0]:
        gallery_tab(current)
for tab, body in ((tabs[1], scores_tab), (tabs[2], threshold_tab)):
    if widgets.is_open(tab) and current.count:
        with tab:
            part = st.radio("Score on", list(PARTS), format_func=PARTS.get, horizontal=True,
                            key=f"drawings_part_{body.__name__}")
            body(current, part)
    elif widgets.is_open(tab):
        tab.info("This set is empty.", icon=":material/info:")
if widgets.is_open(tabs[3]):
    with tabs[3]:
        retrain_tab(current)
if widgets.is_open(tabs[4]):
    with tabs[4]:
        files_tab(current)

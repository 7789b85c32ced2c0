"""The Train page's live view: the attached run's progress, curves and validation previews.

`live_panel()` shows this session's watched job, else the server's running job (a second tab sees the same
training), else the latest run in the store, so a reload after a run finished still shows it, and under it this
visitor's other queued or training runs; `live_charts()` draws
the same run's curves and validation previews. Both redraw themselves (every PROGRESS_SECONDS and CHART_SECONDS),
even while nothing trains, so a run started elsewhere appears. Watching must not slow training, and on a 2-core
machine the browser shares the cores with it: each redraw cost Chromium about a quarter of a core-second, however
little changed (benchmarks/watch.py). With the progress every second the browser took 0.31 of a core and training
ran at 0.78x its unwatched speed; hence every 2 s, and curves with at most CHART_POINTS points per line. (A version
that stopped redrawing while nothing trained lost typed settings in Chromium: a number typed into the settings
reverted about one time in two, the form reset to the first preset; cause not found.)
"""
from __future__ import annotations

import streamlit as st

from core.errors import DigitLabError, RunNotFoundError
from core.runs import RESUMABLE, RunRecord, stored_steps, thinned
from dashboard import state, widgets

PROGRESS_SECONDS = 2.0  # how often the progress redraws
CHART_SECONDS = 4.0  # how often the curves and previews redraw
CHART_POINTS = 300  # step points per line on the loss chart (the epoch rows' figures are never thinned)
TRAINED_ON_VAL = ("This run also trains on the validation images (as the article did): validation figures are not a "
                  "held-out estimate; the test figure at the end is.")


def attached_run_id() -> str | None:
    """This session's watched job, else the server's active job, else the newest run."""
    job_id = state.watched_job()
    if job_id is None:
        active = state.job_manager().active()
        job_id = active[0].id if active else None
    if job_id is None:
        latest = state.run_store().list()
        job_id = latest[0].id if latest else None
    return job_id


@st.fragment(run_every=PROGRESS_SECONDS)
def live_panel() -> None:
    """The attached run's name, progress and figures."""
    run_id = attached_run_id()
    if run_id is None:
        st.info("No training yet. Choose a preset (or change the settings below) and press **Start training**.",
                icon=":material/model_training:")
        return
    try:
        record = state.run_store().get(run_id)
    except RunNotFoundError:  # deleted on the Runs page meanwhile
        state.forget_watched_job()
        st.info("That run was deleted. Press **Start training** for a new one.")
        return
    job = state.job_manager().get(run_id)
    if job is None:
        _stored_run(record)
    else:
        _live_job(record, job.snapshot())
    _my_other_runs(run_id)


def _my_other_runs(shown: str) -> None:
    """This visitor's other queued or training runs, under the one in view: each with Watch and Stop (a second Start
    while a run trains queues a run behind it; the panel stays on the first)."""
    others = [job for job in state.my_active_jobs() if job.id != shown]
    if not others:
        return
    jobs = state.job_manager()
    st.caption("Your other runs")
    for job in others:
        try:
            record = state.run_store().get(job.id)
        except RunNotFoundError:
            continue
        snap = job.snapshot()
        position = jobs.queue_position(job.id)
        where = (f"queued, position {position}" if position else
                 f"{snap['status']} · epoch {snap['epoch']}/{snap['epochs']} · step {snap['step']}/{snap['total_steps']}")
        text, watch, stop = st.columns([6, 1, 1], vertical_alignment="center")
        text.markdown(f"**{widgets.plain(record.name)}**{_what(record)} — {where}")
        if watch.button("Watch", icon=":material/visibility:", key=f"train_watch_{job.id}", width="stretch"):
            state.watch_job(job.id)
            st.rerun()  # the whole page: the curves follow it too
        if stop.button("Stop", icon=":material/stop:", key=f"train_stop_{job.id}", disabled=snap["stop_requested"],
                       width="stretch"):
            state.stop_training(record)
            st.toast(f"Stopping {record.name}…")


def _live_job(record: RunRecord, snap: dict) -> None:
    jobs = state.job_manager()
    status = snap["status"]
    head, button = st.columns([4, 1], vertical_alignment="center")
    head.markdown(f"**{widgets.plain(record.name)}**" + _what(record))
    if status == "queued":
        position = jobs.queue_position(record.id)
        st.info(f"Queued — position {position} behind the run on {snap['device']}." if position else
                "Starting — the training process is loading the model and the data.")
    total = max(snap["total_steps"], 1)
    text = f"{status} · epoch {snap['epoch']}/{snap['epochs']} · step {snap['step']}/{snap['total_steps']}"
    if snap["phase"]:
        text += f" · {snap['phase']}…"
    if snap["precision"]:  # auto resolves on the training device: bf16 autocast where native and faster
        text += f" · {snap['precision']} on {snap['device']}"
    st.progress(min(snap["step"] / total, 1.0), text=text)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Loss", f"{snap['loss']:.4f}" if snap["loss"] is not None else "–")
    m2.metric("Images/s", f"{snap['images_per_second']:.0f}" if snap["images_per_second"] else "–",
              help="Training images per second of this epoch so far, as the run's record counts them.")
    m3.metric("ETA", f"{snap['eta_seconds']:.0f} s" if snap["eta_seconds"] is not None else "–")
    last_val = snap["history"][-1]["val_accuracy"] if snap["history"] else None
    if record.config.get("train_on_val"):  # the article's way: then not a held-out figure, and the label says so
        m4.metric("Val accuracy (trained on)", f"{last_val:.2%}" if last_val is not None else "–",
                  help=TRAINED_ON_VAL)
    else:
        m4.metric("Val accuracy", f"{last_val:.2%}" if last_val is not None else "–")
    if record.config.get("dp"):  # DP-SGD: the privacy spent so far, after each epoch
        spent = snap["history"][-1].get("epsilon") if snap["history"] else None
        st.metric("Privacy spent ε", f"{spent:.2f} of {record.config.get('target_epsilon', 0):g}"
                  if spent is not None else "–", help="(ε, δ)-differential privacy accounted by Opacus after each epoch")

    if status in ("queued", "running"):
        if not state.may_manage(record):
            button.caption("Started by another visitor")
        elif button.button("Stop", icon=":material/stop:", key="train_stop", disabled=snap["stop_requested"],
                           width="stretch"):  # flush with Start training above it
            state.stop_training(record)
            st.toast("Stopping at the end of the current batch…")
    elif status == "completed":
        st.success(f"Finished: test accuracy {snap['test_accuracy']:.2%}. See it on the Runs page or draw a digit.")
    elif status == "cancelled":
        st.warning("Stopped. Resume continues from the last completed epoch.")
    else:
        st.error(snap["message"] or f"The run ended as {status}.")
    if status in RESUMABLE:
        _resume_button(record, button)


@st.fragment(run_every=CHART_SECONDS)
def live_charts() -> None:
    """The attached run's loss and accuracy curves and validation previews (live, or from the store)."""
    run_id = attached_run_id()
    try:
        record = state.run_store().get(run_id) if run_id is not None else None
    except RunNotFoundError:
        return
    if record is None:
        return
    job = state.job_manager().get(run_id)
    if job is None:
        history = state.run_store().read_metrics(record.id)
        steps = stored_steps(history, record.unfinished_steps)  # each epoch's row keeps some (older runs' none)
        if history or steps:  # the curve seen live, thinner
            _curves(thinned(steps, CHART_POINTS), history, record)
        return
    snap = job.snapshot()
    _curves(thinned(snap["steps"], CHART_POINTS), snap["history"], record)
    preview = snap["preview"]
    if preview:
        splits = state.dataset_splits(record.dataset)
        classes = splits.info.classes
        st.caption("Validation images and the model's current answers")
        widgets.image_row([splits.val_x[i].numpy() for i in range(len(preview["pred"]))],
                          [("✓ " if p == t else "✗ ") + f"{classes[p]} {c:.0%}"
                           for p, t, c in zip(preview["pred"], preview["label"], preview["confidence"])], width=64)


def _stored_run(record: RunRecord) -> None:
    """A run this server is not training (finished earlier, or before a restart): what the store knows."""
    head, button = st.columns([4, 1], vertical_alignment="center")
    accuracy = record.metrics.get("test_accuracy")
    epsilon = record.metrics.get("epsilon")
    head.markdown(f"**{widgets.plain(record.name)}**{_what(record)} — latest run, **{record.status}**"
                  + (f", test accuracy **{accuracy:.2%}**" if accuracy is not None else "")
                  + (f", privacy spent ε = **{epsilon:.2f}** (δ = {record.metrics.get('delta', 0):g})"
                     if epsilon is not None else "") + ".")
    if record.message:
        (st.error if record.status in ("failed", "diverged") else st.info)(record.message)
    if record.status in RESUMABLE:
        _resume_button(record, button)


def _what(record: RunRecord) -> str:
    """The " · model on dataset" after a run's name, unless the name already says just that."""
    what = f"{record.model} on {record.dataset}"
    return "" if record.name == what else f" · {what}"


def _resume_button(record: RunRecord, where) -> None:
    if not state.may_manage(record):
        return
    if where.button("Resume", icon=":material/resume:", key="train_resume", width="stretch"):
        try:
            state.resume_training(record)
        except DigitLabError as error:
            widgets.error_box(error)


def _curves(steps: list, history: list[dict], record: RunRecord) -> None:
    left, right = st.columns(2)
    left.plotly_chart(widgets.loss_figure(steps, history), key="train_loss_chart")
    if history:
        right.plotly_chart(widgets.accuracy_figure(history), key="train_acc_chart")
    if record.config.get("train_on_val"):
        st.caption(TRAINED_ON_VAL)

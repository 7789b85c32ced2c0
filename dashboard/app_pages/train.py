"""Train: configure a run (or pick a preset), start it in the background, watch it learn, stop or resume."""
import dataclasses

import streamlit as st
import torch

from core.config import PRESETS, TrainConfig, advice
from core.data import DATASETS, augment_batch, to_float
from core.errors import DigitLabError, RunNotFoundError
from core.models import ZOO
from core.runs import RESUMABLE
from core.train import lr_curve
from dashboard import state, widgets

FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "extra"]
OPTIONAL_INTS = ("train_size", "max_steps", "limit_batches")  # 0 in the form means "not set"


def apply_preset() -> None:
    """Fill the form with the chosen preset's values (other fields back to defaults)."""
    st.session_state["train_preset_value"] = st.session_state["train_preset"]  # survives visits to other pages
    cfg = TrainConfig.from_preset(st.session_state["train_preset"], dataset=st.session_state["train_values"].get(
        "dataset", state.current_dataset()))
    for name in FIELDS:
        value = getattr(cfg, name)
        value = (value or 0) if name in OPTIONAL_INTS else value
        st.session_state["train_values"][name] = st.session_state[f"train_{name}"] = value


# Widget state is dropped when a widget is not drawn (e.g. momentum for Adam), so the form's values live
# in `train_values` and each widget is re-seeded from there before it is drawn.
if "train_values" not in st.session_state:  # first visit in this session: start from the `fast` preset
    st.session_state["train_values"] = {"dataset": state.current_dataset()}
    st.session_state["train_preset"] = "fast"
    apply_preset()
form_values: dict = st.session_state["train_values"]
st.session_state.setdefault("train_preset", st.session_state["train_preset_value"])
for _name in FIELDS:
    st.session_state.setdefault(f"train_{_name}", form_values[_name])

jobs = state.job_manager()
st.title("Train")


# -- live progress -------------------------------------------------------------------------------------
def attached_job_id() -> str | None:
    """This session's job, else the server's running job (a second tab sees the same training)."""
    job_id = st.session_state.get("train_job_id")
    if job_id is None:
        active = jobs.active()
        job_id = active[0].id if active else None
    return job_id


@st.fragment(run_every=1.0)
def live_panel() -> None:
    job_id = attached_job_id()
    if job_id is None:
        st.info("No training yet. Choose settings below and press **Start training**.")
        return
    job = jobs.get(job_id)
    try:
        record = state.run_store().get(job_id)
    except RunNotFoundError:  # deleted on the Runs page meanwhile
        st.session_state.pop("train_job_id", None)
        st.info("That run was deleted. Choose settings below and press **Start training**.")
        return
    if job is None:  # trained before this server started: show what the store knows
        st.markdown(f"**{record.name}** — {record.status}. {record.message}")
        if record.status in RESUMABLE and st.button("Resume", icon=":material/resume:", key="train_resume_stored"):
            try:
                jobs.resume(job_id)
            except DigitLabError as error:
                widgets.error_box(error)
        return
    snap = job.snapshot()
    st.subheader(f"{record.name}")
    status = snap["status"]
    if status == "queued":
        st.info(f"Queued — position {jobs.queue_position(job_id) or 1} behind the run on {snap['device']}.")
    total = max(snap["total_steps"], 1)
    st.progress(min(snap["step"] / total, 1.0),
                text=f"{status} · epoch {snap['epoch']}/{snap['epochs']} · step {snap['step']}/{snap['total_steps']}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Loss", f"{snap['loss']:.4f}" if snap["loss"] is not None else "–")
    m2.metric("Images/s", f"{snap['images_per_second']:.0f}" if snap["images_per_second"] else "–")
    m3.metric("ETA", f"{snap['eta_seconds']:.0f} s" if snap["eta_seconds"] is not None else "–")
    last_val = snap["history"][-1]["val_accuracy"] if snap["history"] else None
    m4.metric("Val accuracy", f"{last_val:.2%}" if last_val is not None else "–")

    if status in ("queued", "running"):
        if st.button("Stop", icon=":material/stop:", key="train_stop", disabled=snap["stop_requested"]):
            jobs.stop(job_id)
            st.toast("Stopping at the end of the current batch…")
    elif status == "completed":
        st.success(f"Finished: test accuracy {snap['test_accuracy']:.2%}. See it on the Runs page or draw a digit.")
    elif status == "cancelled":
        st.warning("Stopped. Resume continues from the last completed epoch.")
    else:
        st.error(snap["message"] or f"The run ended as {status}.")
    if status in ("cancelled", "failed") and st.button("Resume", icon=":material/resume:", key="train_resume"):
        try:
            jobs.resume(job_id)
        except DigitLabError as error:
            widgets.error_box(error)

    left, right = st.columns(2)
    left.plotly_chart(widgets.loss_figure(snap["steps"], snap["history"]), key="train_loss_chart")
    if snap["history"]:
        right.plotly_chart(widgets.accuracy_figure(snap["history"]), key="train_acc_chart")
    run_cfg = TrainConfig.from_dict(record.config)
    if run_cfg.train_on_val:
        st.caption("This run also trains on the validation images (as the article did): validation figures are "
                   "not a held-out estimate; the test figure at the end is.")
    lr_steps, lrs = lr_curve(run_cfg, record.dataset_sizes.get("train") or state.dataset_splits(run_cfg.dataset).sizes()["train"])
    right.plotly_chart(widgets.lr_figure(lr_steps, lrs, done=snap["step"]), key="train_lr_chart")
    preview = snap["preview"]
    if preview:
        splits = state.dataset_splits(record.dataset)
        classes = splits.info.classes
        st.caption("Validation images and the model's current answers")
        widgets.image_row([splits.val_x[i].numpy() for i in range(len(preview["pred"]))],
                          [("✓ " if p == t else "✗ ") + f"{classes[p]} {c:.0%}"
                           for p, t, c in zip(preview["pred"], preview["label"], preview["confidence"])], width=64)


live_panel()
st.divider()


# -- configuration ---------------------------------------------------------------------------------
st.selectbox("Preset", list(PRESETS), key="train_preset", on_change=apply_preset,
             help="Fills the form below; change anything afterwards.")
st.caption(PRESETS[st.session_state["train_preset"]]["summary"])

model_col, opt_col, reg_col = st.columns(3)
with model_col:
    st.subheader("Model & data")
    st.selectbox("Model", list(ZOO), key="train_model",
                 format_func=lambda n: f"{ZOO[n].title} — {ZOO[n].params:,} params, {ZOO[n].flops / 1e6:.1f} MFLOPs")
    st.caption(ZOO[st.session_state["train_model"]].description)
    st.selectbox("Dataset", list(DATASETS), key="train_dataset", format_func=state.dataset_title)
    st.number_input("Training images to use (0 = all)", min_value=0, step=1000, key="train_train_size",
                    help="Fewer images answer 'how much data does this model need?'")
with opt_col:
    st.subheader("Optimisation")
    st.selectbox("Optimiser", ["sgd", "adam", "adamw"], key="train_optimizer")
    st.number_input("Learning rate (peak)", min_value=0.0, format="%.5f", step=1e-4, key="train_lr")
    if st.session_state["train_optimizer"] == "sgd":
        st.slider("Momentum", 0.0, 0.99, key="train_momentum")
    else:
        st.session_state["train_momentum"] = form_values["momentum"] = 0.0
    st.selectbox("Schedule", ["constant", "step", "cosine", "onecycle"], key="train_schedule")
    if st.session_state["train_schedule"] == "step":
        st.number_input("Decay every (epochs)", min_value=1, key="train_step_every")
        st.number_input("Decay factor", min_value=0.01, max_value=1.0, key="train_step_gamma")
    if st.session_state["train_schedule"] == "onecycle":
        st.slider("Warm-up fraction", 0.0, 0.9, key="train_warmup_fraction")
    st.number_input("Batch size", min_value=1, step=16, key="train_batch_size")
    st.number_input("Epochs", min_value=1, key="train_epochs")
    st.number_input("Early-stopping patience (0 = off)", min_value=0, key="train_patience")
with reg_col:
    st.subheader("Regularisation")
    st.number_input("L2 weight decay", min_value=0.0, format="%.5f", step=1e-4, key="train_weight_decay")
    st.number_input("L1 penalty", min_value=0.0, format="%.6f", step=1e-5, key="train_l1")
    st.slider("Dropout", 0.0, 0.9, key="train_dropout")
    st.slider("Label smoothing", 0.0, 0.5, key="train_label_smoothing")

with st.expander("Augmentation (rotation, scale, shift, erasing — never flips)",
                 expanded=bool(st.session_state["train_augment"])):
    st.toggle("Augment training batches", key="train_augment")
    a1, a2, a3, a4, a5 = st.columns(5)
    a1.slider("Rotation ± degrees", 0.0, 45.0, key="train_rotate_deg")
    a2.slider("Zoom ± fraction", 0.0, 0.5, key="train_scale")
    a3.slider("Shift ± pixels", 0.0, 6.0, key="train_translate_px")
    a4.slider("Pen width ±", 0.0, 1.0, key="train_stroke", help="Thicken or thin strokes, as different pens do")
    a5.slider("Erasing probability", 0.0, 1.0, key="train_erase_prob")
    sample = None
    if st.session_state["train_augment"]:
        try:
            sample = state.dataset_splits(st.session_state["train_dataset"]).train_x[:8]
        except DigitLabError:
            pass  # the settings check below says why the dataset cannot be used
    if sample is not None:
        gen = torch.Generator().manual_seed(st.session_state.get("train_aug_seed", 0))
        shown = augment_batch(to_float(sample), gen, rotate_deg=st.session_state["train_rotate_deg"],
                              scale=st.session_state["train_scale"], translate_px=st.session_state["train_translate_px"],
                              erase_prob=st.session_state["train_erase_prob"], stroke=st.session_state["train_stroke"])
        st.caption("Live preview: the same eight training images as the model would see them")
        widgets.image_row([s[0].numpy() for s in shown], [""] * 8, width=64)
        if st.button("New random draw", key="train_aug_resample"):
            st.session_state["train_aug_seed"] = st.session_state.get("train_aug_seed", 0) + 1
            st.rerun()

with st.expander("Run settings"):
    r1, r2, r3 = st.columns(3)
    r1.selectbox("Precision", ["fp32", "bf16"], key="train_precision")
    r2.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="train_device")
    r3.number_input("Seed", min_value=0, key="train_seed")
    r1.number_input("Stop after steps (0 = no limit)", min_value=0, key="train_max_steps")
    r2.number_input("Batches per epoch (0 = all)", min_value=0, key="train_limit_batches")
    r3.text_input("Run name (optional)", key="train_name")
    st.toggle("Also train on the 5,000 validation images (as the article trained on all 60,000)",
              key="train_train_on_val", help="Validation curves then show images the model trained on.")

for name in FIELDS:
    form_values[name] = st.session_state.get(f"train_{name}", form_values[name])
values = dict(form_values)
for name in OPTIONAL_INTS:
    values[name] = int(values[name]) or None
try:
    cfg = TrainConfig.from_dict(values).replace(extra={"preset": st.session_state["train_preset"]})
    sizes = state.dataset_splits(cfg.dataset).sizes()
    n_train = sizes["train"] + (sizes["val"] if cfg.train_on_val else 0)
    for note in advice(cfg, n_train):
        st.warning(note)
    problem = None
except DigitLabError as error:
    cfg, problem = None, error
    widgets.error_box(error)

if cfg is not None:
    steps, lrs = lr_curve(cfg, n_train)
    st.plotly_chart(widgets.lr_figure(steps, lrs), key="train_lr_preview")

if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=cfg is None, key="train_start"):
    try:
        job = jobs.submit(cfg, name=st.session_state["train_name"].strip() or None)
        st.session_state["train_job_id"] = job.id
    except DigitLabError as error:
        widgets.error_box(error)
    else:
        st.rerun()  # show the new job's progress at the top straight away



"""Train: pick a preset (or change any setting), start a run in the background, watch it learn, stop or resume.

The Start button and the live progress sit together at the top; the settings form below is generated
from core.training.config, so its labels and ranges are the ones validation uses.
"""
import streamlit as st
import torch

from core.training.config import PRESETS, TrainConfig, advice, plan
from core.training.measured import preset_sentence
from core.data.datasets import augment_batch, to_float
from core.errors import DigitLabError
from core.models.zoo import ZOO
from core.training.schedule import lr_curve
from dashboard import form, state, widgets
from dashboard.live import live_charts, live_panel


def apply_preset() -> None:
    """Fill the form with the chosen preset's values (other settings back to defaults), keeping the dataset."""
    preset = st.session_state["train_preset"]
    st.session_state["train_preset_value"] = preset  # survives visits to other pages
    dataset = st.session_state.get(form.VALUES, {}).get("dataset", state.current_dataset())
    form.fill(TrainConfig.from_preset(preset, dataset=dataset))


if form.VALUES not in st.session_state:  # first visit in this session: start from the `fast` preset
    st.session_state["train_preset"] = "fast"
    apply_preset()
st.session_state.setdefault("train_preset", st.session_state["train_preset_value"])

st.title("Train")
header = st.container()  # preset, name and Start: filled once the form below is read
live = st.container()  # the run's progress, right under the button that started it
st.divider()

# -- the settings form ------------------------------------------------------------------------------
st.subheader("Settings")
model_col, opt_col, reg_col = st.columns(3)
with model_col:
    st.markdown("**Model & data**")
    form.draw("model")
    spec = ZOO[st.session_state[form.VALUES]["model"]]
    st.caption(f"{spec.description} {spec.params:,} parameters, {spec.flops / 1e6:.1f} MFLOPs per image.")
    form.draw("dataset")
    form.draw("train_size")
    form.draw("per_class")
with opt_col:
    st.markdown("**Optimisation**")
    for name in ("optimizer", "lr", "momentum", "beta1", "beta2", "schedule", "step_every", "step_gamma", "warmup_fraction",
                 "batch_size", "epochs", "patience"):
        form.draw(name)
with reg_col:
    st.markdown("**Regularisation**")
    for name in ("weight_decay", "l1", "dropout", "label_smoothing"):
        form.draw(name)

# Plain expanders: the browser keeps them open or closed across reruns. Keyed ones that rerun on toggle
# (on_change="rerun") lost a value typed inside and committed with Tab in about 1 edit in 5 (measured in Chromium).
with st.expander("Augmentation (rotation, zoom, shift, pen width, erasing — never flips)",
                 expanded=st.session_state.setdefault("train_aug_expanded",
                                                      bool(st.session_state[form.VALUES]["augment"]))):
    form.draw("augment")
    for column, name in zip(st.columns(5), ("rotate_deg", "scale", "translate_px", "stroke", "erase_prob")):
        form.draw(name, column)
    values = st.session_state[form.VALUES]
    if values["augment"]:
        try:
            sample = state.dataset_splits(values["dataset"]).train_x[:8]
        except DigitLabError:
            sample = None  # the settings check at the top says why the dataset cannot be used
        if sample is not None:
            gen = torch.Generator().manual_seed(st.session_state.get("train_aug_seed", 0))
            shown = augment_batch(to_float(sample), gen, rotate_deg=values["rotate_deg"], scale=values["scale"],
                                  translate_px=values["translate_px"], erase_prob=values["erase_prob"],
                                  stroke=values["stroke"])
            st.caption("Live preview: the same eight training images as the model would see them")
            widgets.image_row([s[0].numpy() for s in shown], [""] * 8, width=64)
            if st.button("New random draw", key="train_aug_resample"):
                st.session_state["train_aug_seed"] = st.session_state.get("train_aug_seed", 0) + 1
                st.rerun()

with st.expander("Robustness & privacy (adversarial training, differential privacy)"):
    left, right = st.columns(2)
    for name in ("adversarial", "adv_eps", "adv_steps"):
        form.draw(name, left)
    for name in ("dp", "target_epsilon", "delta", "max_grad_norm"):
        form.draw(name, right)
    st.caption("Adversarial training learns from attacked images (FGSM with a random start is the cheap recipe); "
               "DP-SGD clips each image's gradient and adds noise so the model reveals little about any one image. "
               "Both cost accuracy and time: the Robustness & privacy page measures what they buy.")

with st.expander("Run settings (precision, device, seed, limits)"):
    r1, r2, r3 = st.columns(3)
    form.draw("precision", r1)
    form.draw("device", r2)
    form.draw("seed", r3)
    form.draw("max_steps", r1)
    form.draw("limit_batches", r2)
    form.draw("repeat", r3)
    form.draw("train_on_val")

# -- the check, the schedule, and the Start button at the top ---------------------------------------------
problem, notes, run = None, [], None
try:
    cfg = TrainConfig.from_dict(form.config_values()).replace(extra={"preset": st.session_state["train_preset"]})
    run = plan(cfg, state.dataset_splits(cfg.dataset).sizes())
    notes = advice(cfg, run)
except DigitLabError as error:
    cfg, problem = None, error
if run is not None:
    steps, lrs = lr_curve(cfg, run)
    st.plotly_chart(widgets.lr_figure(steps, lrs), key="train_lr_preview")
    st.caption(f"{run.train_images:,} training images, {run.steps_per_epoch:,} steps per epoch, "
               f"{run.total_steps:,} steps in all.")

with header:
    preset_col, name_col, start_col = st.columns([2, 2, 1], vertical_alignment="bottom")
    preset_col.selectbox("Preset", list(PRESETS), key="train_preset", on_change=apply_preset,
                         help="Fills the settings below; change anything afterwards.")
    name_col.text_input("Run name (optional)", key="train_name", max_chars=120)
    started = start_col.button("Start training", type="primary", icon=":material/play_arrow:",
                               disabled=cfg is None, key="train_start", width="stretch")
    measured = preset_sentence(st.session_state["train_preset"])
    st.caption(PRESETS[st.session_state["train_preset"]]["summary"] + (f" {measured}" if measured else ""))
    if problem is not None:
        widgets.error_box(problem)
    for note in notes:
        st.warning(note)
    if started:
        try:
            job = state.start_training(cfg, name=st.session_state["train_name"].strip() or None)
            if state.watched_job() != job.id:  # behind the run in view, which keeps its place and its Stop
                st.toast("Queued behind the run in view: it is listed under its progress.", icon=":material/queue:")
        except DigitLabError as error:
            widgets.error_box(error)

with live:
    live_panel()  # progress, every 2 s
    live_charts()  # curves and previews, every 4 s

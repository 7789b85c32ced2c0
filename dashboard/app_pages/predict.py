"""Draw & predict: draw, upload or pick a digit and see what the model reads — and what it actually sees.

Each source (drawing, upload, test image) is its own tab and only the open tab is read, so the answer on
screen always belongs to the image beside it; each keeps its image while another tab or page is open.
"""
import hashlib
import html

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas  # Components v2: import only inside a running app

from core.data.datasets import unit
from core.data.drawing_sets import DrawingSet, Verdict
from core.errors import DigitLabError, EmptyDrawingError
from core.inference.predict import Prediction, Predictor
from core.data.preprocess import decode_upload
from dashboard import state, widgets
from dashboard.canvas_toolbar import canvas_toolbar_above

CANVAS_KEY = "predict_canvas"
DEFAULT_SET = "My digits"
NEW_SET = "__new__"
DIGITS = tuple(str(d) for d in range(10))  # the set chooser's "create a new set" entry
SOURCES = [":material/draw: Draw", ":material/upload: Upload", ":material/casino: Test image"]


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_predictor(key: str, sha: str | None) -> Predictor:
    """One predictor per model (and weights checksum), shared by every session."""
    return Predictor.load(key, state.run_store())


def show_result(prediction: Prediction, origin: str, true_label: int | None = None, canvas: np.ndarray | None = None,
                set_slot=None) -> None:
    """The verdict, what the model saw, the probabilities, and the way to Explain; with a canvas, the way to save it
    (its set chooser drawn in `set_slot`)."""
    label = prediction.classes[prediction.label]
    if prediction.confidence >= threshold:
        st.markdown(f"### It's {widgets.article(label)} **{label}** ({prediction.confidence:.0%} sure)")
    else:
        st.markdown(f"### Not sure — draw again ({label}? only {widgets.percent_down(prediction.confidence)})")
    if canvas is not None and tuple(prediction.classes) == DIGITS:  # a garment model's answer is no digit label
        save_controls(prediction, canvas, set_slot)
    # What the model saw, its top 3 and the probabilities: one HTML block, as this runs on every stroke
    top = [f"<b>{html.escape(prediction.classes[i])}</b> {p:.1%}" for i, p in prediction.top(3)]
    if len(chosen) > 1:
        top.append(f'<small>Ensemble of {len(chosen)} models: probabilities averaged.</small>')
    if any(m.glow_amount for m in predictor.models):  # core.models.zoo.Glow: part of the model, not of this image
        top.append("<small>It reads the strokes with a soft glow around them.</small>")
    st.html(widgets.model_view(prediction.model_input, ["Top 3:", *top])
            + widgets.probability_bars(prediction.probs, prediction.classes, prediction.label, bar_px=80))
    note = "" if len(chosen) == 1 else (
        f"{origin} averaged {len(chosen)} models ({label} at {prediction.confidence:.0%}); an explanation is of one "
        f"model, so this shows the first of them, {names[chosen[0]]}.")
    request = state.ExplainRequest(origin, prediction.model_input, chosen[0], true_label, note)
    state.offer_to_explain(request)
    if st.button("Explain this prediction", icon=":material/lightbulb:", key=f"predict_explain_{origin}",
                 help="Opens Explain on this image with " + (names[chosen[0]] if len(chosen) == 1 else
                                                             f"the first model of the ensemble, {names[chosen[0]]}")):
        state.send_to_explain(request)


def verdict_key() -> str:
    """The model key a saved drawing's verdict names: the model, or the ensemble's members."""
    return chosen[0] if len(chosen) == 1 else "ensemble:" + "+".join(chosen)


def chosen_set_name(listed: list[DrawingSet]) -> str:
    """The name of the set the save buttons save to: the chooser's set, or the new set's name as typed."""
    choice = st.session_state.get("predict_save_set")
    found = next((s for s in listed if s.id == choice), None) if choice and choice != NEW_SET else None
    if found is not None:
        return found.name
    typed = st.session_state.get("predict_save_new")
    return DEFAULT_SET if typed is None else typed.strip()


def save_drawing(prediction: Prediction, canvas: np.ndarray, label: int | None) -> None:
    """(A button's callback.) Save the drawing with its true label into the chosen set, creating it when new."""
    sets = state.drawing_store()
    try:
        if label is None:
            raise DigitLabError("Pick the digit it really is first.")
        name = chosen_set_name(sets.list_sets())
        target = sets.find(name) or sets.create_set(name, owner=state.visitor_id())
        drawing = sets.add(target.id, prediction.model_input, canvas, label=label, drawer=state.visitor_id(),
                           drawer_name=st.session_state.get("predict_save_drawer") or None,
                           verdict=Verdict(verdict_key(), prediction.label, prediction.confidence))
    except DigitLabError as error:
        st.session_state["predict_save_error"] = str(error)
        return
    state.use_drawing_set(target.id)
    st.session_state["predict_saved"] = {"digest": drawing.digest, "id": drawing.id, "set": target.name,
                                         "label": int(label)}
    n = target.count + 1
    toast_later(f"Saved as {prediction.classes[label]} in {target.name} ({n:,} drawing{'' if n == 1 else 's'} now).",
                ":material/bookmark_added:")


def forget_removed_upload() -> None:
    """(The uploader's callback.) The visitor removed the file: forget the kept upload too."""
    if st.session_state.get("predict_upload") is None:
        st.session_state.pop("predict_upload_kept", None)


def toast_later(text: str, icon: str) -> None:
    """(From a callback.) Show a toast when the canvas's fragment next runs: an element shown from a callback of a
    fragment's button is not supported by Streamlit ("will replace the existing elements at the top of your app")."""
    st.session_state["predict_toast"] = (text, icon)


def undo_save() -> None:
    """(A button's callback.) Delete the drawing just saved."""
    saved = st.session_state.pop("predict_saved", None)
    if saved:
        try:
            state.drawing_store().delete_drawing(saved["id"])
        except DigitLabError:
            pass  # already deleted on the Drawings page
        toast_later("Removed it from the set again.", ":material/undo:")


def save_controls(prediction: Prediction, canvas: np.ndarray, set_slot) -> None:
    """One compact row under the verdict, "Yes, save it" and "No — save as…" (a digit picker, filled in only when
    opened: this runs on every stroke); the set it goes to and who drew it in `set_slot` (under the canvas)."""
    digest = hashlib.sha256(np.ascontiguousarray(prediction.model_input, dtype="<f4").tobytes()).hexdigest()
    saved = st.session_state.get("predict_saved")
    label = prediction.classes[prediction.label]
    error = st.session_state.pop("predict_save_error", None)
    if error:
        st.error(error, icon=":material/error:")
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    if saved and saved["digest"] == digest:
        row.caption(f":material/bookmark_added: Saved as **{prediction.classes[saved['label']]}** in "
                    f"**{widgets.plain(saved['set'])}** — draw the next one.")
        row.button("Undo", icon=":material/undo:", key="predict_save_undo", type="tertiary", on_click=undo_save)
        return
    row.button(f"Yes, it's {widgets.article(label)} {label} — save it", icon=":material/check:",
               key="predict_save_right", on_click=save_drawing, args=(prediction, canvas, prediction.label),
               help=f"Save this drawing, labelled {label}, in the drawing set chosen beside.")
    wrong = row.popover("No — save as…", icon=":material/edit:", key="predict_save_as", on_change="rerun")
    if widgets.is_open(wrong):
        with wrong:
            true_key = f"predict_save_true_{digest[:12]}"  # a new drawing starts on the model's second guess
            second = next(i for i, _ in prediction.top(2) if i != prediction.label)
            true = st.pills("It is", list(range(len(prediction.classes))), format_func=prediction.classes.__getitem__,
                            key=true_key, default=second)
            st.button(f"Save as {prediction.classes[true]}" if true is not None else "Pick the right digit",
                      key="predict_save_wrong", disabled=true is None, type="primary", on_click=save_drawing,
                      args=(prediction, canvas, true))
    listed = state.drawing_store().list_sets()
    existing = {s.id: f"{s.name} ({s.count})" for s in listed}
    if st.session_state.get("predict_save_set") not in [*existing, NEW_SET]:  # first time, or its set was deleted
        mine = next((s for s in listed if s.name == DEFAULT_SET), None)
        st.session_state["predict_save_set"] = mine.id if mine else NEW_SET
    handed = state.current_drawing_set()  # the set last saved to or opened on the Drawings page
    if handed in existing and st.session_state.get("predict_save_set_handed") != handed:
        st.session_state["predict_save_set"] = st.session_state["predict_save_set_handed"] = handed
    shown = chosen_set_name(listed) or "?"
    # Always filled, unlike the one above: a widget left unrendered loses its value (the set, who drew it)
    with set_slot.popover(f"Saves to: {shown[:24] + '…' if len(shown) > 25 else shown}", icon=":material/folder:",
                          help="The drawing set the buttons save to, and who drew it."):
        choice = st.selectbox("Save to", [*existing, NEW_SET], key="predict_save_set",
                              format_func=lambda k: existing.get(k, "A new set…"))
        if choice == NEW_SET:
            st.text_input("New set's name", DEFAULT_SET if DEFAULT_SET not in {s.name for s in listed} else "",
                          key="predict_save_new", max_chars=80)
        st.text_input("Drawn by (optional)", key="predict_save_drawer", max_chars=80,
                      placeholder="a name, or leave empty")


st.title("Draw & predict")
canvas_toolbar_above()  # a stroke begun at the canvas's top right must draw, not land on its hidden toolbar
runs = state.finished_runs()
names = state.source_names(runs)
pick, sure = st.columns([3, 2])
state.restore_widgets("predict_models", "predict_source", predict_threshold=0.7, predict_brush=18)
state.apply_predict_threshold()  # a hand-off from the Drawings page ("Use this threshold on Draw & predict")
state.follow_sidebar_model("predict_models", names)
chosen = pick.multiselect("Models (several: an ensemble averages their probabilities)", list(names),
                          format_func=names.get, key="predict_models")
threshold = sure.slider("Confidence threshold", 0.0, 1.0, step=0.01, key="predict_threshold",
                        help="Below this, the app says 'not sure' instead of guessing: the safety net against "
                             "confident-looking wrong answers.")
state.remember_widgets("predict_models", "predict_threshold")
if not chosen:
    st.info("Choose at least one model.")
    st.stop()
try:
    shas = {r.id: r.weights_sha256 for r in runs}
    loaded = [load_predictor(key, shas.get(key)) for key in chosen]
    predictor = loaded[0] if len(loaded) == 1 else Predictor.ensemble(loaded)
except DigitLabError as error:
    widgets.error_box(error)
    st.stop()
# A model trained with label smoothing s on k classes learns to say about 1 - s + s/k when sure (the starter: 91%), so
# a threshold above 1 - s turns most of its right answers into "not sure": the slider says so when it is set there
smoothing = max(float(state.model_config(key).get("label_smoothing") or 0.0) for key in chosen)
if smoothing and threshold > 1 - smoothing:
    sure.caption(f"{'This model was' if len(chosen) == 1 else 'A chosen model was'} trained with label smoothing "
                 f"{smoothing:g}: even its right answers mostly read about "
                 f"{1 - smoothing + smoothing / len(predictor.classes):.0%} sure, so at this threshold most say "
                 "'not sure'.")


@st.fragment
def draw_and_read() -> None:
    """The canvas and its answer. A fragment: a stroke reruns only this, not the sidebar and the model pickers,
    so the answer comes back quickly even when a class draws on one server at once."""
    if toast := st.session_state.pop("predict_toast", None):
        st.toast(toast[0], icon=toast[1])
    left, right = st.columns([1, 1])
    with left:
        st.space(16)  # room for the canvas's toolbar, which shows above it on hover: over the tabs it hid "Test image"
        key = f"{CANVAS_KEY}_{st.session_state.get('predict_canvas_version', 0)}"
        kept = st.session_state.get("predict_drawing")  # this canvas's last drawing: {"key", "strokes", "image"}
        kept = kept if kept is not None and kept["key"] == key else None
        if key not in st.session_state:  # mounting anew (first visit, or back from another tab or page): redraw the
            # kept strokes. Only now: a changed initial_drawing makes the canvas reload it, wiping its undo history
            st.session_state["predict_canvas_initial"] = kept["strokes"] if kept else None
        canvas = st_canvas(stroke_width=st.session_state.get("predict_brush", 18), stroke_color="#FFFFFF",
                           background_color="#000000", height=280, width=280, drawing_mode="freedraw",
                           initial_drawing=st.session_state.get("predict_canvas_initial"), return_image_data=True,
                           key=key)
        brush, clear = st.columns([3, 1], vertical_alignment="bottom")
        brush.slider("Brush width", 5, 40, key="predict_brush")
        state.remember_widgets("predict_brush")
        # Clear empties the canvas: after a return to this tab, the canvas's own bin goes back to the restored drawing
        if clear.button("Clear", icon=":material/ink_eraser:", key="predict_clear"):
            st.session_state["predict_canvas_version"] = st.session_state.get("predict_canvas_version", 0) + 1
            st.rerun(scope="fragment")
        set_slot = st.container()  # where saved drawings go: filled once there is a verdict
    with right:
        try:
            drawn = canvas.image_data  # decoded from the component's PNG on each access: read once
            if drawn is not None:
                st.session_state["predict_drawing"] = {"key": key, "strokes": canvas.json_data, "image": drawn}
            elif kept and (canvas.json_data or {}).get("objects") == kept["strokes"].get("objects"):
                drawn = kept["image"]  # its kept strokes redrawn: the canvas sends no image until the next stroke
            if drawn is None:
                raise EmptyDrawingError("The canvas is empty — draw a digit first.")
            show_result(predictor.predict(drawn), "Draw & predict", canvas=drawn, set_slot=set_slot)
        except EmptyDrawingError:
            st.info("Draw a digit on the black square: the answer appears here when you lift the pen.",
                    icon=":material/draw:")
        except DigitLabError as error:
            widgets.error_box(error)


draw_tab, upload_tab, sample_tab = st.tabs(SOURCES, key="predict_source", on_change="rerun")  # reopens as left
state.remember_widgets("predict_source")
if widgets.is_open(draw_tab):
    with draw_tab:
        draw_and_read()

if widgets.is_open(upload_tab):
    with upload_tab:
        left, right = st.columns([1, 1])
        # The uploader comes back empty from another tab or page (a browser forgets the file): the upload is kept here
        # until the visitor removes it (the callback: only a visitor's change calls it) or uploads another
        upload = left.file_uploader("A PNG or JPEG of one digit (dark on light or light on dark)",
                                    type=["png", "jpg", "jpeg"], key="predict_upload", on_change=forget_removed_upload)
        if upload is not None:
            st.session_state["predict_upload_kept"] = (upload.name, upload.getvalue())
        kept_upload = st.session_state.get("predict_upload_kept")
        with right:
            if kept_upload is None:
                st.info("Upload a photo or scan of one digit.", icon=":material/upload:")
            else:
                name, data = kept_upload
                try:
                    photo = decode_upload(data)
                    left.image(photo, caption=f"Your upload, {widgets.plain(name)}", width=200)
                    show_result(predictor.predict(photo), "Upload")
                except DigitLabError as error:
                    widgets.error_box(error)
        if upload is None and kept_upload is not None:
            left.button("Remove this upload", icon=":material/close:", key="predict_upload_remove", type="tertiary",
                        on_click=lambda: st.session_state.pop("predict_upload_kept", None))

if widgets.is_open(sample_tab):
    with sample_tab:
        splits = state.dataset_splits(state.model_dataset(chosen[0]))  # the model's own test images, whatever
        # the sidebar's dataset: a sandal read by a digit model answers nothing
        left, right = st.columns([1, 1])
        if left.button("Pick a random test image", icon=":material/casino:", key="predict_random"):
            st.session_state["predict_sample"] = int(np.random.default_rng().integers(len(splits.test_y)))
        index = st.session_state.get("predict_sample")
        if index is None or index >= len(splits.test_y):
            right.info("Pick a test image the model has never trained on.", icon=":material/casino:")
        else:
            truth = int(splits.test_y[index])
            left.image(widgets.digit_image(splits.test_x[index].numpy(), scale=6), width=168, clamp=True,
                       caption=f"Test image #{index}, true label {splits.info.classes[truth]}")
            with right:
                show_result(predictor.predict_prepared(unit(splits.test_x[index].numpy())), "Test image", truth)

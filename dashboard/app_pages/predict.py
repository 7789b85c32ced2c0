"""Draw & predict: draw, upload or pick a digit and see what the model reads — and what it actually sees.

Each source (drawing, upload, test image) is its own tab and only the open tab is read, so the answer on
screen always belongs to the image beside it.
"""
import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas  # Components v2: import only inside a running app

from core.data.datasets import unit
from core.errors import DigitLabError, EmptyDrawingError
from core.inference.predict import Prediction, Predictor
from core.data.preprocess import decode_upload
from dashboard import state, widgets

CANVAS_KEY = "predict_canvas"
SOURCES = [":material/draw: Draw", ":material/upload: Upload", ":material/casino: Test image"]


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_predictor(key: str, sha: str | None) -> Predictor:
    """One predictor per model (and weights checksum), shared by every session."""
    return Predictor.load(key, state.run_store())


def show_result(prediction: Prediction, origin: str, true_label: int | None = None) -> None:
    """The verdict, what the model saw, the probabilities, and the way to Explain."""
    label = prediction.classes[prediction.label]
    if prediction.confidence >= threshold:
        st.markdown(f"### It's {widgets.article(label)} **{label}** ({prediction.confidence:.0%} sure)")
    else:
        st.markdown(f"### Not sure — draw again ({label}? only {prediction.confidence:.0%})")
    seen, top = st.columns([1, 2])
    seen.image(widgets.digit_image(prediction.model_input, scale=4), width=112, clamp=True,
               caption="What the model sees (28×28)")
    top.markdown("Top 3:  \n" + "  \n".join(f"**{prediction.classes[i]}** {p:.1%}" for i, p in prediction.top(3)))
    if len(chosen) > 1:
        top.caption(f"Ensemble of {len(chosen)} models: probabilities averaged.")
    request = state.ExplainRequest(origin, prediction.model_input, chosen[0], true_label)
    state.offer_to_explain(request)
    if top.button("Explain this prediction", icon=":material/lightbulb:", key=f"predict_explain_{origin}",
                  help="Opens Explain on this image with " + (names[chosen[0]] if len(chosen) == 1 else
                                                              f"the first model of the ensemble, {names[chosen[0]]}")):
        state.send_to_explain(request)
    st.plotly_chart(widgets.probability_bars(prediction.probs, prediction.classes, prediction.label, height=220),
                    key=f"predict_probs_{origin}")


st.title("Draw & predict")
runs = state.finished_runs()
names = state.source_names(runs)
pick, sure = st.columns([3, 2])
chosen = pick.multiselect("Models (several: an ensemble averages their probabilities)", list(names),
                          default=[state.current_run_id()], format_func=names.get, key="predict_models")
threshold = sure.slider("Confidence threshold", 0.0, 1.0, 0.7, 0.05, key="predict_threshold",
                        help="Below this, the app says 'not sure' instead of guessing: the safety net against "
                             "confident-looking wrong answers.")
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

draw_tab, upload_tab, sample_tab = st.tabs(SOURCES, key="predict_source", on_change="rerun")
if draw_tab.open is not False:  # None when tabs are not tracked (AppTest): then every tab runs
    with draw_tab:
        left, right = st.columns([1, 1])
        with left:
            canvas = st_canvas(stroke_width=st.session_state.get("predict_brush", 18), stroke_color="#FFFFFF",
                               background_color="#000000", height=280, width=280, drawing_mode="freedraw",
                               return_image_data=True,
                               key=f"{CANVAS_KEY}_{st.session_state.get('predict_canvas_version', 0)}")
            brush, clear = st.columns([3, 1], vertical_alignment="bottom")
            brush.slider("Brush width", 5, 40, 18, key="predict_brush")
            if clear.button("Clear", icon=":material/ink_eraser:", key="predict_clear"):
                st.session_state["predict_canvas_version"] = st.session_state.get("predict_canvas_version", 0) + 1
                st.rerun()
        with right:
            try:
                if canvas.image_data is None:
                    raise EmptyDrawingError("The canvas is empty — draw a digit first.")
                show_result(predictor.predict(canvas.image_data), "Draw & predict")
            except EmptyDrawingError:
                st.info("Draw a digit on the black square: the answer appears here when you lift the pen.",
                        icon=":material/draw:")
            except DigitLabError as error:
                widgets.error_box(error)

if upload_tab.open is not False:
    with upload_tab:
        left, right = st.columns([1, 1])
        upload = left.file_uploader("A PNG or JPEG of one digit (dark on light or light on dark)",
                                    type=["png", "jpg", "jpeg"], key="predict_upload")
        with right:
            if upload is None:
                st.info("Upload a photo or scan of one digit.", icon=":material/upload:")
            else:
                try:
                    photo = decode_upload(upload.getvalue())
                    left.image(photo, caption="Your upload", width=200)
                    show_result(predictor.predict(photo), "Upload")
                except DigitLabError as error:
                    widgets.error_box(error)

if sample_tab.open is not False:
    with sample_tab:
        splits = state.dataset_splits(state.current_dataset())
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

"""Draw & predict: draw, upload or pick a digit and see what the model reads — and what it actually sees."""
import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas  # Components v2: import only inside a running app

from core.errors import DigitLabError
from core.predict import Predictor, decode_upload
from core.preprocess import EmptyDrawingError
from dashboard import state, widgets

CANVAS_KEY = "predict_canvas"


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_predictor(run_id: str, sha: str | None) -> Predictor:
    """One predictor per run (and weights checksum), shared by every session."""
    return Predictor.starter() if run_id == state.STARTER else Predictor.load(run_id, state.run_store())


def predictor_for(run_ids: list[str], shas: dict[str, str | None]) -> Predictor:
    loaded = [load_predictor(rid, shas.get(rid)) for rid in run_ids]
    return loaded[0] if len(loaded) == 1 else Predictor.ensemble(loaded)


st.title("Draw & predict")
runs = state.finished_runs()
names = state.source_names(runs)
base = state.current_run_id()
ensemble = st.multiselect("Models (choose several to average their probabilities: an ensemble)", list(names),
                          default=[base], format_func=names.get, key="predict_models")
threshold = st.slider("Confidence threshold", 0.0, 1.0, 0.7, 0.05, key="predict_threshold",
                      help="Below this, the app says 'not sure' instead of guessing: the safety net against "
                           "confident-looking wrong answers.")
if not ensemble:
    st.info("Choose at least one model.")
    st.stop()
try:
    predictor = predictor_for(ensemble, {r.id: r.weights_sha256 for r in runs})
except DigitLabError as error:
    widgets.error_box(error)
    st.stop()

draw_tab, upload_tab, sample_tab = st.tabs([":material/draw: Draw", ":material/upload: Upload", ":material/casino: Test image"])
prediction, problem = None, None
with draw_tab:
    left, right = st.columns([1, 1])
    with left:
        brush = st.slider("Brush width", 5, 40, 18, key="predict_brush")
        if st.button("Clear", icon=":material/ink_eraser:", key="predict_clear"):
            st.session_state["predict_canvas_version"] = st.session_state.get("predict_canvas_version", 0) + 1
        canvas = st_canvas(stroke_width=brush, stroke_color="#FFFFFF", background_color="#000000", height=280,
                           width=280, drawing_mode="freedraw", return_image_data=True,
                           key=f"{CANVAS_KEY}_{st.session_state.get('predict_canvas_version', 0)}")
    try:
        if canvas.image_data is not None:
            prediction = predictor.predict(canvas.image_data)
    except EmptyDrawingError:
        pass
    except DigitLabError as error:
        problem = error
    if prediction is None and problem is None:
        right.info("Draw a digit on the black square: the prediction updates when you lift the pen.")
with upload_tab:
    upload = st.file_uploader("A PNG or JPEG of one digit (dark on light or light on dark)", type=["png", "jpg", "jpeg"],
                              key="predict_upload")
    if upload is not None:
        try:
            prediction = predictor.predict(decode_upload(upload.getvalue()))
        except DigitLabError as error:
            problem = error
with sample_tab:
    splits = state.dataset_splits(state.current_dataset())
    if st.button("Pick a random test image", icon=":material/casino:", key="predict_random"):
        st.session_state["predict_sample"] = int(np.random.default_rng().integers(len(splits.test_y)))
    index = st.session_state.get("predict_sample")
    if index is not None and index < len(splits.test_y):
        st.caption(f"Test image #{index}, true label **{splits.info.classes[int(splits.test_y[index])]}**")
        prediction = predictor.predict_prepared(splits.test_x[index].numpy() / 255.0)

st.divider()
if problem is not None:
    widgets.error_box(problem)
elif prediction is not None:
    seen, result = st.columns([1, 2])
    with seen:
        st.caption("What the model sees (28×28)")
        st.image(widgets.digit_image(prediction.model_input, scale=6), width=168, clamp=True)
    with result:
        label = prediction.classes[prediction.label]
        if prediction.confidence >= threshold:
            st.markdown(f"### It's a **{label}** ({prediction.confidence:.0%} sure)")
        else:
            st.markdown(f"### Not sure — draw again ({label}? only {prediction.confidence:.0%})")
        st.markdown("Top 3: " + " · ".join(f"**{prediction.classes[i]}** {p:.1%}" for i, p in prediction.top(3)))
        if len(ensemble) > 1:
            st.caption(f"Ensemble of {len(ensemble)} models: probabilities averaged.")
    st.plotly_chart(widgets.probability_bars(prediction.probs, prediction.classes, prediction.label),
                    key="predict_probs")
    st.session_state["predict_last_input"] = prediction.model_input
    if st.button("Explain this prediction", icon=":material/lightbulb:", key="predict_explain"):
        st.session_state["explain_source"] = "The image from Draw & predict"
        st.switch_page("app_pages/explain.py")

"""Explain: why the model said what it said — SHAP, LIME, integrated gradients, how far to trust them, layers."""
import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.data.datasets import unit
from core.errors import DigitLabError
from core.models.zoo import ZOO
from core.insight.layers import activations, input_filters
from core.insight.trust import additivity, deletion_curve, randomisation_check
from dashboard import explain_plots as plots
from dashboard import judging, state, widgets

st.title("Explain")
src, dataset, splits = state.selected_source()
classes = splits.info.classes


# -- which image ---------------------------------------------------------------------------------------
offers = state.explain_offers()  # images other pages sent or offered, with the model that read them
drawing_sets = judging.judging_sets(src)  # the visitors' own handwriting, when the model reads digits
TEST_IMAGE, DRAWING = "A test image", "A drawing from a set"
choices = [f"The image from {origin}" for origin in offers] + [TEST_IMAGE] + ([DRAWING] if drawing_sets else [])
focus = state.take_explain_focus()
if focus is not None:  # just sent here by a button: show that image
    st.session_state["explain_source"] = f"The image from {focus}"
if st.session_state.get("explain_source") not in choices:
    st.session_state["explain_source"] = choices[0]
source = st.radio("Explain", choices, horizontal=True, key="explain_source")
true_label = None


def pick_random(key: str, n: int) -> None:  # a callback: it runs before the number input exists on the rerun
    st.session_state[key] = int(np.random.default_rng().integers(n))


if source == TEST_IMAGE:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    st.session_state.setdefault("explain_index", state.EXPLAIN_DEFAULTS["index"])
    index = c1.number_input("Test image number", 0, len(splits.test_y) - 1, key="explain_index")
    c2.button("Random", icon=":material/casino:", key="explain_random", on_click=pick_random,
              args=("explain_index", len(splits.test_y)))
    image, true_label = unit(splits.test_x[int(index)].numpy()), int(splits.test_y[int(index)])
elif source == DRAWING:
    set_names = {s.id: f"“{s.name}” ({s.count:,} drawings)" for s in drawing_sets}
    if st.session_state.get("explain_set") not in set_names:
        handed = state.current_drawing_set()
        st.session_state["explain_set"] = handed if handed in set_names else next(iter(set_names))
    c0, c1, c2 = st.columns([2, 2, 1], vertical_alignment="bottom")
    set_id = c0.selectbox("Drawing set", list(set_names), format_func=set_names.get, key="explain_set")
    drawings = judging.drawing_images(set_id, judging.set_version(set_id))
    if not 0 <= st.session_state.get("explain_drawing", 0) < len(drawings.ids):
        st.session_state["explain_drawing"] = 0  # the set changed or shrank
    index = int(c1.number_input("Drawing number", 0, len(drawings.ids) - 1, key="explain_drawing"))
    c2.button("Random", icon=":material/casino:", key="explain_random_drawing", on_click=pick_random,
              args=("explain_drawing", len(drawings.ids)))
    image, true_label = drawings.inputs[index], int(drawings.y[index])
    st.caption(f"Drawing #{drawings.ids[index]} in the gallery, labelled **{true_label}** by the person who drew it.")
else:
    offer = offers[source.removeprefix("The image from ")]
    image, true_label = offer.image, offer.label
    if offer.model == src.key and offer.note:
        st.caption(widgets.plain(offer.note))
    elif offer.model != src.key:
        st.caption(f"{offer.origin} read this image with another model; it is explained here with the model chosen "
                   "in the sidebar.")
image = image.astype(np.float32)

background = st.sidebar.select_slider("SHAP background images", [25, 50, 100, 200], key="explain_background",
                                     value=state.EXPLAIN_DEFAULTS["background"])
try:
    explainer = state.explainer_for(src.key, src.sha256, dataset, background)
except DigitLabError as error:
    widgets.error_box(error)
    st.stop()
probs = explainer.probabilities(torch.from_numpy(image)[None, None])[0].numpy()
predicted = int(probs.argmax())
highlight = {predicted: "← predicted"}
if true_label is not None:
    highlight[true_label] = "← true" if true_label != predicted else "← predicted = true"

left, right = st.columns([1, 3])
left.image(widgets.digit_image(image, 5), width=140, clamp=True)
right.markdown(f"**{widgets.plain(src.name)}** reads **{classes[predicted]}** ({probs[predicted]:.1%})"
               + (f"; the true label is **{classes[true_label]}**" if true_label is not None else "") + ".")
right.html(widgets.probability_bars(probs, classes, predicted))

# Only the open tab is computed (results are cached per model and image in the explainer), so the page
# answers quickly and a tab costs its time only when a person opens it.
state.keep_widget_values("explain_shap_method", "explain_layer", explain_lime_samples=1000, explain_global_n=1000)
shap_tab, lime_tab, ig_tab, trust_tab, layers_tab, global_tab = st.tabs(
    ["SHAP", "LIME", "Integrated gradients & occlusion", "Can I trust it?", "Layers", "Global importance"],
    key="explain_tab", on_change="rerun")
methods = ["gradient"] + (["deep"] if "deep" in ZOO[src.model].explainers else [])
if st.session_state.get("explain_shap_method") not in methods:
    st.session_state["explain_shap_method"] = state.EXPLAIN_DEFAULTS["method"]


def shap_values():
    with st.spinner("Computing SHAP values for all 10 classes…"):
        return explainer.shap(image, st.session_state["explain_shap_method"])


def lime_result():
    with st.spinner("Fitting LIME…"):
        return explainer.lime(image, st.session_state.get("explain_lime_samples", 1000))


if widgets.is_open(shap_tab):
    with shap_tab:
        method = st.radio("SHAP explainer", methods, horizontal=True, key="explain_shap_method",
                          format_func={"gradient": "GradientExplainer (expected gradients)",
                                       "deep": "DeepExplainer (DeepLIFT)"}.get)
        if len(methods) == 1:
            st.caption(f"{ZOO[src.model].title}: DeepExplainer does not apply (attention, LayerNorm, GELU).")
        shap_attr = shap_values()
        st.plotly_chart(plots.attribution_grid(shap_attr.values, image, classes, highlight,
                                               f"SHAP values of each class's logit ({shap_attr.seconds:.2f} s, "
                                               f"background {background})"), key="explain_shap_grid")
        st.caption("Red pixels push the model towards that class, blue pixels away from it. Values add up to the "
                   "class's logit minus its average over the background images.")

if widgets.is_open(lime_tab):
    with lime_tab:
        st.select_slider("LIME samples", [250, 500, 1000, 2000, 4000], key="explain_lime_samples")
        lime = lime_result()
        st.plotly_chart(plots.segments_figure(lime.segments, image, lime.weights[lime.label],
                                              f"LIME on {lime.n_segments} SLIC superpixels, {lime.num_samples} samples "
                                              f"({lime.seconds:.2f} s)"), key="explain_lime")
        st.markdown(f"Segments that most support **{classes[lime.label]}**: "
                    f"{', '.join(map(str, lime.top_positive)) or 'none'} · most against: "
                    f"{', '.join(map(str, lime.top_negative)) or 'none'} · local fit R² {lime.scores[lime.label]:.2f}")

if widgets.is_open(ig_tab):
    with ig_tab:
        ig = explainer.integrated_gradients(image)
        occ = explainer.occlusion(image)
        a, b = st.columns(2)
        a.plotly_chart(plots.single_map(ig.of(predicted), image, f"Integrated gradients ({ig.seconds:.2f} s)"),
                       key="explain_ig")
        a.caption(f"From a black image to this one; completeness gap (delta) {ig.convergence_delta:.2g} logits.")
        b.plotly_chart(plots.single_map(occ.of(predicted), image, f"Occlusion, 4×4 patches ({occ.seconds:.2f} s)"),
                       key="explain_occlusion")
        b.caption("How much p(predicted) drops when each patch is blacked out.")
        agreement = np.corrcoef(shap_values().of(predicted).ravel(), ig.of(predicted).ravel())[0, 1]
        st.markdown(f"SHAP and integrated gradients agree with correlation **{agreement:.2f}** on this image.")

if widgets.is_open(trust_tab):
    with trust_tab:
        shap_attr = shap_values()
        add = additivity(shap_attr)
        st.markdown(f"**SHAP additivity** ({shap_attr.method}): the attributions of each class add up to its logit minus "
                    f"the expected logit within **{add.max_abs_error:.3g}** ({add.relative_error:.1%} of the largest "
                    "difference). DeepLIFT is exact by construction; the gradient estimator is sampled.")
        if st.button("Run deletion curves and the randomised-model check", key="explain_trust_run"):
            with st.spinner("Deleting pixels and re-explaining with random weights…"):
                maps = {"SHAP": shap_attr.of(predicted), "LIME": lime_result().heatmap,
                        "Integrated gradients": explainer.integrated_gradients(image).of(predicted),
                        "Occlusion": explainer.occlusion(image).of(predicted)}
                st.session_state["explain_trust"] = {
                    "curves": {name: deletion_curve(explainer, image, m, predicted) for name, m in maps.items()},
                    "random": [randomisation_check(explainer, image, method, predicted)
                               for method in ("gradient", "integrated-gradients")],
                    "for": (src.key, image.tobytes())}
        trust = st.session_state.get("explain_trust")
        if trust and trust["for"] == (src.key, image.tobytes()):  # the results belong to this model and image
            st.plotly_chart(plots.deletion_figure(trust["curves"]), key="explain_deletion")
            st.dataframe(pd.DataFrame([{"method": n, "deletion AUC": c.auc, "random ink AUC": c.random_auc,
                                        "brightest-first AUC": c.intensity_auc,
                                        "beats both baselines by": min(c.random_auc, c.intensity_auc) - c.auc}
                                       for n, c in trust["curves"].items()]),
                         hide_index=True, key="explain_trust_table")
            st.caption("Every order deletes only ink (black pixels change nothing). A map is faithful when its curve "
                       "falls faster than both deleting ink at random and deleting the brightest ink first.")
            st.markdown("**Randomised-model check**: with the weights re-initialised, a map that still looks the same "
                        "was describing the image, not the model. Rank correlation with the trained model's map: "
                        + "; ".join(f"{r.method} **{r.spearman:.2f}** (|map| {r.spearman_abs:.2f})" for r in trust["random"]))
        else:
            st.caption("Takes a few seconds: every method's map is used to delete pixels, and SHAP and integrated "
                       "gradients are recomputed on a model with random weights.")

if widgets.is_open(layers_tab):
    with layers_tab:
        model = explainer.model
        acts = activations(model, image)
        names = [f"{a.name} · {a.kind} {tuple(a.shape)}" for a in acts]
        which = st.selectbox("Layer", range(len(acts)), format_func=names.__getitem__, key="explain_layer")
        chosen = acts[which]
        if chosen.is_map:
            st.plotly_chart(plots.feature_maps(chosen.values, f"{chosen.name}: first {min(32, len(chosen.values))} of "
                                                              f"{len(chosen.values)} feature maps"), key="explain_maps")
        else:
            flat = chosen.values if chosen.values.ndim == 1 else np.linalg.norm(chosen.values, axis=-1)
            st.plotly_chart(plots.vector_figure(flat, f"{chosen.name}: {'units' if chosen.values.ndim == 1 else 'token norms'}"),
                            key="explain_vector")
        filters = input_filters(model)
        label = {"conv": "First-layer convolution kernels", "patch": "Patch-embedding filters",
                 "dense": "Hidden units' incoming weights (28×28)"}[filters.kind]
        st.plotly_chart(plots.signed_images(filters.images, f"{label}: what the first layer looks for"), key="explain_filters")

if widgets.is_open(global_tab):
    with global_tab:
        n = st.select_slider("Test images", [100, 250, 500, 1000, 2000], key="explain_global_n")
        if st.button("Compute global importance", key="explain_global_run"):
            bar = st.progress(0.0, text="Explaining test images…")
            result = explainer.global_importance(splits.test_x[:n], splits.test_y[:n],
                                                 progress=lambda done, total: bar.progress(done / total,
                                                                                           text=f"{done}/{total} images"))
            st.session_state["explain_global"] = {"for": (src.key, n), "result": result}
        stored = st.session_state.get("explain_global")
        if stored and stored["for"] == (src.key, n):
            result = stored["result"]
            st.plotly_chart(plots.importance_grid(result.overall, result.per_class, classes), key="explain_global_grid")
            st.caption(f"{result.method} attributions of the labelled class over {result.n} images in {result.seconds:.1f} s.")

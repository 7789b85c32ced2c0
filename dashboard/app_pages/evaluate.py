"""Evaluate: accuracy, precision/recall/F1, confusion, mistakes, calibration, model-vs-model, retraining."""
import numpy as np
import pandas as pd
import streamlit as st

from core.training.config import TrainConfig
from core.data.datasets import unit
from core.errors import DigitLabError
from core.inference.weights import model_source
from core.inference.drawing_scores import DIGIT_DATASETS
from core.inference.metrics import calibration, class_report, confusion, mcnemar, reject_curve
from dashboard import judging, state, widgets

store = state.run_store()
st.title("Evaluate")
src, dataset, splits = state.selected_source()
drawing_sets = judging.judging_sets(src)
collections = {judging.TEST_SET: f"The test set of {splits.info.title}",
               **{s.id: f"The drawing set “{s.name}” ({s.count:,} drawings)" for s in drawing_sets}}
kept = st.session_state.get("eval_data", st.session_state.get("eval_data_kept"))  # survives visits to other pages
choice = kept if kept in collections else judging.TEST_SET  # e.g. the set was deleted, or the model reads no digits
if drawing_sets:
    st.session_state["eval_data"] = choice
    choice = st.selectbox("Judge the model on", list(collections), format_func=collections.get, key="eval_data",
                          help="Your own handwriting, collected on Draw & predict and the Drawings page, or the test set.")
st.session_state["eval_data_kept"] = choice


@st.fragment(run_every=1.0)
def scoring_panel() -> None:
    """A model's first look at the test set (the starter's, on a fresh server: ~13 s) runs in the background: its
    progress here, then the whole page once its figures can be shown."""
    progress = judging.scoring_progress(src, dataset)
    if progress is None:
        st.rerun()
    done, total = progress
    st.progress(done / total if total else 0.0,
                text=f"Scoring {widgets.plain(src.name)} on the test images of {splits.info.title}: "
                     + (f"{done:,} of {total:,}." if total else "starting.")
                     + " Its figures appear here when it is done; each model is scored once, then kept on disk.")


if choice == judging.TEST_SET and judging.scoring_progress(src, dataset) is not None:
    scoring_panel()
    st.stop()
try:
    judged = judging.judge(src, dataset, splits, choice)
except DigitLabError as error:
    widgets.error_box(error)
    st.stop()
on_drawings = judged.drawing_set is not None
classes = judged.classes
probs, labels = judged.result.probs.numpy(), judged.result.labels.numpy()
preds, conf = probs.argmax(1), probs.max(1)
report = class_report(labels, preds, len(classes))
st.caption(f"**{widgets.plain(src.name)}** ({src.model}) on {widgets.plain(judged.what)}. "
           "Choose another model in the sidebar.")
if dataset != src.dataset and not on_drawings:
    st.warning(f"This model was trained on {src.dataset}, which is not available here: showing {dataset} instead.")

m = st.columns(5)
m[0].metric("Accuracy", f"{report.accuracy:.2%}")
m[1].metric("Errors", f"{int((preds != labels).sum()):,}")
m[2].metric("Loss" if on_drawings else "Test loss", f"{judged.result.loss:.4f}")
m[3].metric("Macro F1", f"{report.macro['f1']:.4f}")
m[4].metric("Weighted F1", f"{report.weighted['f1']:.4f}")
with st.expander("Per-class precision, recall and F1"):
    table = pd.DataFrame(report.per_class).assign(**{"class": list(classes)})
    averages = pd.DataFrame([{"class": "macro avg", **report.macro, "support": len(labels)},
                             {"class": "weighted avg", **report.weighted, "support": len(labels)}])
    st.dataframe(pd.concat([table, averages]), hide_index=True, key="eval_report")


def image_at(i: int) -> np.ndarray:
    """The i-th judged image as the model read it, float in [0, 1]."""
    return unit(np.asarray(judged.images[i]))


def short(name: str, size: int = 14) -> str:
    return name if len(name) <= size else name[:size - 1] + "…"


def gallery(indices: np.ndarray, key: str, limit: int = 18, explain: bool = False,
            versus: tuple[str, np.ndarray] | None = None) -> None:
    """Judged images with true/predicted label and confidence; optionally a button to explain each. `versus`: another
    model's name and answers, shown beside this model's (named) in each caption."""
    if len(indices) == 0:
        st.info("No images here.")
        return
    shown = indices[:limit]
    cols = st.columns(6)
    for n, i in enumerate(shown):
        with cols[n % 6]:
            if versus is None:
                said = f"said {classes[preds[i]]} {conf[i]:.0%}"
            else:  # two runs often share a name ("speed-cnn on mnist"): then "this model" and "the other"
                this, other = ((short(src.name), short(versus[0])) if short(src.name) != short(versus[0])
                               else ("this model", "the other"))
                said = f"{this}: {classes[preds[i]]} · {other}: {classes[versus[1][i]]}"
            st.image(widgets.digit_image(image_at(i), 3), width=84, caption=f"true {classes[labels[i]]} · {said}")
            if explain and st.button("Explain", key=f"{key}_{i}"):
                state.send_to_explain(state.ExplainRequest("Evaluate", image_at(i), src.key,
                                                           int(labels[i])))
    if len(indices) > limit:
        st.caption(f"Showing {limit} of {len(indices)}.")


# Only the open tab is drawn: the first view shows the confusion matrix alone, not five tabs' charts and galleries
state.keep_widget_values("eval_normalize", "eval_cell_true", "eval_cell_pred", "eval_mistake_true", "eval_mistake_pred",
                         "eval_compare", eval_threshold=0.7, eval_retrain_epochs=2, eval_retrain_focus=5.0,
                         eval_retrain_lr=3e-4)
confusion_tab, mistakes_tab, calibration_tab, compare_tab, retrain_tab = st.tabs(
    ["Confusion matrix", "Mistakes", "Calibration & reject option", "Compare with another model",
     "Retrain on hard cases"], key="eval_tab", on_change="rerun")


if widgets.is_open(confusion_tab):
    with confusion_tab:
        normalized = st.toggle("Normalise rows (recall per class)", key="eval_normalize")
        raw = confusion(labels, preds, len(classes))
        matrix = confusion(labels, preds, len(classes), normalize=True) if normalized else raw
        event = st.plotly_chart(widgets.confusion_figure(matrix, classes, normalized), key="eval_confusion",
                                on_select="rerun", selection_mode="points")
        clicked = widgets.selected_cell(event)
        if clicked is not None and clicked != st.session_state.get("eval_cell_clicked"):
            st.session_state["eval_cell_clicked"] = clicked  # apply a click once; the boxes stay free to change
            st.session_state["eval_cell_true"], st.session_state["eval_cell_pred"] = clicked
        off = raw - np.diag(np.diag(raw))
        worst = np.unravel_index(off.argmax(), off.shape)  # start on the most frequent confusion ...
        what = f"{src.key}:{src.sha256}:{choice}"  # ... of the model and images judged: another starts on its own
        if st.session_state.get("eval_cell_for") != what:
            st.session_state["eval_cell_true"], st.session_state["eval_cell_pred"] = int(worst[0]), int(worst[1])
            st.session_state["eval_cell_for"] = what
        c1, c2 = st.columns(2)
        true_cls = c1.selectbox("Cell: true class", range(len(classes)), format_func=classes.__getitem__,
                                key="eval_cell_true")
        pred_cls = c2.selectbox("Cell: predicted class", range(len(classes)), format_func=classes.__getitem__,
                                key="eval_cell_pred")
        cell = np.flatnonzero((labels == true_cls) & (preds == pred_cls))
        st.markdown(f"**{len(cell)}** {'drawings' if on_drawings else 'test images'} are **{classes[true_cls]}** and were read as **{classes[pred_cls]}**.")
        gallery(cell[np.argsort(-conf[cell])], "eval_cell_explain", explain=True)

if widgets.is_open(mistakes_tab):
    with mistakes_tab:
        f1, f2 = st.columns(2)
        options = [None, *range(len(classes))]
        label_of = lambda c: "any" if c is None else classes[c]  # noqa: E731
        only_true = f1.selectbox("True class", options, format_func=label_of, key="eval_mistake_true")
        only_pred = f2.selectbox("Predicted class", options, format_func=label_of, key="eval_mistake_pred")
        wrong = preds != labels
        if only_true is not None:
            wrong &= labels == only_true
        if only_pred is not None:
            wrong &= preds == only_pred
        mistakes = np.flatnonzero(wrong)
        st.caption("Most confident mistakes first: the ones a confidence threshold cannot catch.")
        gallery(mistakes[np.argsort(-conf[mistakes])], "eval_mistake_explain", limit=24, explain=True)

if widgets.is_open(calibration_tab):
    with calibration_tab:
        cal = calibration(probs, labels)
        slider, k1, k2, k3 = st.columns([2, 1, 1, 1])
        threshold = slider.slider("Confidence threshold", 0.0, 0.99, step=0.01, key="eval_threshold")
        kept = conf >= threshold
        k1.metric("Answered", f"{kept.mean():.1%}")
        k2.metric("Accuracy of answers", f"{(preds[kept] == labels[kept]).mean():.2%}" if kept.any() else "–")
        k3.metric("Set aside", f"{int((~kept).sum()):,}")
        left, right = st.columns(2)
        left.plotly_chart(widgets.reliability_figure(cal.confidence, cal.accuracy, cal.count, cal.ece), key="eval_reliability")
        right.plotly_chart(widgets.reject_figure(reject_curve(probs, labels), threshold), key="eval_reject")
        st.caption(f"Expected calibration error {cal.ece:.2%}: the gap between how sure the model says it is and how "
                   "often it is right, averaged over confidence bins.")

if widgets.is_open(compare_tab):
    with compare_tab:
        runs = state.finished_runs()
        if on_drawings:  # every digit model can read the drawings
            same_data = {r.id for r in runs if r.dataset in DIGIT_DATASETS} | {state.STARTER}
        else:
            same_data = {r.id for r in runs if r.dataset == src.dataset} | ({state.STARTER} if src.dataset == "mnist" else set())
        names = {k: v for k, v in state.source_names(runs).items() if k != src.key and k in same_data}
        if not names:
            st.info(f"Train another model on {splits.info.title} to compare with this one.")
        else:
            children = [r.id for r in runs if r.parent == src.key and r.id in names]
            keys = list(names)
            other_key = st.selectbox("Compare with", keys, index=keys.index(children[0]) if children else 0,
                                     format_func=names.get, key="eval_compare")
            try:
                other_src = model_source(store, other_key)
                other = judging.judge(other_src, dataset, splits, choice).result.probs.numpy()
            except DigitLabError as error:
                widgets.error_box(error)
            else:
                other_preds = other.argmax(1)
                other_report = class_report(labels, other_preds, len(classes))
                diff = [b["f1"] - a["f1"] for a, b in zip(report.per_class, other_report.per_class)]
                st.plotly_chart(widgets.f1_difference_figure(diff, classes, src.name, other_src.name), key="eval_f1_diff")
                test = mcnemar(preds == labels, other_preds == labels)
                verdict = ("a real difference (p < 0.05)" if test.significant
                           else "not distinguishable from chance on these images (p ≥ 0.05)")
                st.markdown(f"**{widgets.plain(src.name)}**: {report.accuracy:.2%} · **{widgets.plain(other_src.name)}**: {other_report.accuracy:.2%}. "
                            f"Only the first is right on **{test.only_a}** images, only the second on **{test.only_b}**. "
                            f"McNemar's exact test: p = {test.p_value:.3g} — {verdict}.")
                st.markdown(f"Right for **{widgets.plain(src.name)}**, wrong for **{widgets.plain(other_src.name)}**:")
                gallery(np.flatnonzero((preds == labels) & (other_preds != labels)), "eval_cmp_a", limit=12,
                        versus=(other_src.name, other_preds))
                st.markdown(f"Right for **{widgets.plain(other_src.name)}**, wrong for **{widgets.plain(src.name)}**:")
                gallery(np.flatnonzero((preds != labels) & (other_preds == labels)), "eval_cmp_b", limit=12,
                        versus=(other_src.name, other_preds))

if widgets.is_open(retrain_tab):
    with retrain_tab:
        if on_drawings:
            st.markdown("Retraining on a drawing set — MNIST plus the set's drawings, oversampled, with before and after on "
                        "the part of the set it did not train on — is on the **Drawings** page.")
            if st.button("Retrain on this set", icon=":material/model_training:", key="eval_retrain_drawings"):
                state.use_drawing_set(judged.drawing_set.id, open_tab="Retrain")
                st.switch_page("app_pages/drawings.py")
        else:
            st.markdown("Fine-tune this model on the training set with the images it finds hard drawn more often "
                        "(weight 1 + k·(1 − p(true class))). When it finishes, the **Compare** tab shows before and after.")
            r1, r2, r3 = st.columns(3)
            epochs = r1.number_input("Epochs", 1, 20, key="eval_retrain_epochs")
            focus = r2.slider("Focus on hard images (k)", 0.0, 20.0, key="eval_retrain_focus")
            lr = r3.number_input("Learning rate", 1e-6, 1.0, format="%.5f", key="eval_retrain_lr")
            if st.button("Fine-tune on hard cases", type="primary", key="eval_retrain"):
                try:
                    base = TrainConfig.from_dict({k: v for k, v in src.config.items() if k != "extra"})
                    cfg = base.replace(init_from=src.key, focus_errors=float(focus), epochs=int(epochs), lr=float(lr),
                                       schedule="cosine", max_steps=None, limit_batches=None, patience=0, dataset=dataset,
                                       extra={"fine_tuned_from": src.key})
                    state.start_training(cfg, name=f"{src.name} · hard cases", parent=src.key)
                    st.success("Fine-tuning started.")
                except DigitLabError as error:
                    widgets.error_box(error)
            if state.watched_job():
                st.page_link("app_pages/train.py", label="Watch it on the Train page", icon=":material/model_training:")

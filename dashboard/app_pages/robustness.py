"""Robustness & privacy: attack one image, robustness curves and corruptions for chosen models, and what
differential privacy costs in accuracy. Long computations run in the background with progress.
"""
import numpy as np
import pandas as pd
import streamlit as st

from core.data.datasets import unit
from core.errors import DigitLabError
from core.insight.attacks import (CORRUPTIONS, SEVERITY_PARAMS, AttackSettings, attack_image, corruption_table,
                                  robustness_curve)
from core.inference.weights import load_source, model_source
from dashboard import judging, state, widgets

st.title("Robustness & privacy")
src, dataset, splits = state.selected_source()
classes = splits.info.classes
runner = state.task_runner()


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def model_for(key: str, sha256: str | None):
    """One eval-mode model per weights file, shared by sessions (attacks never change or hook it)."""
    return load_source(model_source(state.run_store(), key))


def task_panel(slot: str, render) -> None:
    """The background task stored under `slot`: progress while it runs, `render(result)` when done."""
    stored = st.session_state.get(slot)
    task = runner.get(stored["task"]) if stored else None
    if task is None:
        return
    snap = task.snapshot()
    if snap["status"] in ("queued", "running"):
        total = max(snap["total"], 1)
        st.progress(snap["done"] / total, text=f"{snap['title']}: {snap['done']:,}/{snap['total']:,} images"
                    if snap["total"] else f"{snap['title']}: waiting for the previous task…")
    elif snap["status"] == "failed":
        st.error(snap["message"], icon=":material/error:")
    else:
        st.caption(f"{snap['title']} — {snap['seconds']:.1f} s")
        render(snap["result"])


try:
    model = model_for(src.key, src.sha256)
except DigitLabError as error:
    widgets.error_box(error)
    st.stop()

one_tab, curve_tab, corrupt_tab, privacy_tab = st.tabs(
    ["Attack one image", "Robustness curves", "Corruptions", "Privacy"], key="robust_tab", on_change="rerun")

if widgets.is_open(one_tab):
    with one_tab:
        offers = state.explain_offers()
        choices = ["A test image", "A mistake of this model"] + [f"The image from {origin}" for origin in offers]
        pick, attack_col, eps_col = st.columns([2, 1, 2])
        source = pick.radio("Image", choices, key="robust_source")
        attack = attack_col.radio("Attack", ["fgsm", "pgd"], key="robust_attack",
                                  format_func={"fgsm": "FGSM (one step)", "pgd": "PGD (40 steps)"}.get)
        eps = eps_col.slider("ε: how far each pixel may move (0..1)", 0.0, 0.5, 0.1, 0.01, key="robust_eps",
                             help="L∞ budget: every pixel changes by at most ε. MNIST's usual test radius is 0.3.")
        if source in ("A test image", "A mistake of this model"):
            if source == "A test image":
                index = int(eps_col.number_input("Test image number", 0, len(splits.test_y) - 1, key="robust_index"))
            else:
                probs = judging.predictions(src.key, src.sha256, dataset).probs.numpy()
                wrong = np.flatnonzero(probs.argmax(1) != splits.test_y.numpy())
                wrong = wrong[np.argsort(-probs[wrong].max(1))]  # the most confident mistakes first
                rank = eps_col.slider("Mistake (most confident first)", 1, max(len(wrong), 1), 1, key="robust_mistake",
                                      disabled=len(wrong) < 2)
                if len(wrong) == 0:
                    st.info("This model makes no mistake on the test set.")
                    st.stop()
                index = int(wrong[rank - 1])
            image, label = unit(splits.test_x[index].numpy()), int(splits.test_y[index])
        else:
            offer = offers[source.removeprefix("The image from ")]
            image, label = offer.image, offer.label
        result = attack_image(model, image, label, AttackSettings(attack, eps, 40 if attack == "pgd" else 1))
        clean_probs, adv_probs, delta = result.probs, result.adversarial_probs, result.perturbation
        before, after = int(clean_probs.argmax()), int(adv_probs.argmax())
        # Judged against the true label when there is one: on a mistake the model was wrong before any attack
        truth = f" The image is a **{classes[label]}**." if label is not None else ""
        if label is not None and before != label:
            verdict = "**Wrong before the attack:** "
        else:
            verdict = "**The attack worked:** " if before != after else "**The model held:** "
        st.markdown(verdict + f"{widgets.plain(src.name)} read **{classes[before]}** ({clean_probs[before]:.0%}) and now reads "
                    f"**{classes[after]}** ({adv_probs[after]:.0%}) — every pixel moved by at most {eps:.2f}.{truth}")
        a, b, c = st.columns(3)
        a.image(widgets.digit_image(image, 5), width=140, clamp=True,
                caption="original" if label is None else f"original, true label {classes[label]}")
        b.image(widgets.signed_image(delta, 5), width=140, caption=f"perturbation (amplified; max |Δ| {np.abs(delta).max():.2f})")
        c.image(widgets.digit_image(result.adversarial, 5), width=140, clamp=True, caption="adversarial")
        left, right = st.columns(2)
        left.html(widgets.probability_bars(clean_probs, classes, before, "Before the attack"))
        right.html(widgets.probability_bars(adv_probs, classes, after, "After the attack"))
        if st.button("Explain the adversarial image", icon=":material/lightbulb:", key="robust_explain"):
            state.send_to_explain(state.ExplainRequest("Robustness & privacy", result.adversarial, src.key, label))

if widgets.is_open(curve_tab):
    with curve_tab:
        names = state.source_names()
        left, mid, right = st.columns([3, 1, 1])
        chosen = left.multiselect("Models", list(names), default=[src.key] if src.key in names else [], format_func=names.get, key="robust_curve_models")
        attack = mid.radio("Attack", ["pgd", "fgsm"], key="robust_curve_attack", horizontal=True, format_func=str.upper)
        n = right.select_slider("Test images", [100, 250, 500, 1000], value=250, key="robust_curve_n")
        eps_values = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
        if st.button("Compute robustness curves", type="primary", disabled=not chosen, key="robust_curve_run"):
            keys = list(chosen)
            sources = {k: model_source(state.run_store(), k) for k in keys}

            def work(progress):
                curves, per_model = {}, n * len(eps_values)
                for i, key in enumerate(keys):
                    curves[sources[key].name] = robustness_curve(
                        model_for(key, sources[key].sha256), splits.test_x[:n], splits.test_y[:n], eps_values,
                        attack=attack, progress=lambda done, total, i=i: progress(i * per_model + done, len(keys) * per_model))
                return curves

            st.session_state["robust_curve"] = {"task": runner.submit(f"{attack.upper()} robustness curves", work).id}

        @st.fragment(run_every=1.0)
        def curves_panel() -> None:
            task_panel("robust_curve", lambda curves: st.plotly_chart(widgets.robustness_figure(curves),
                                                                      key="robust_curve_chart"))

        curves_panel()
        st.caption("Accuracy on the first test images as ε grows. A normally trained model falls to near zero under "
                   "PGD at ε = 0.3; adversarial training (the robust preset) keeps much of it, for a price in clean "
                   "accuracy and training time.")

if widgets.is_open(corrupt_tab):
    with corrupt_tab:
        n = st.select_slider("Test images", [200, 500, 1000, 2000], value=500, key="robust_corrupt_n")
        if st.button("Measure corruptions", type="primary", key="robust_corrupt_run"):
            key, sha = src.key, src.sha256

            def work(progress):
                return corruption_table(model_for(key, sha), splits.test_x[:n], splits.test_y[:n], progress=progress)

            st.session_state["robust_corrupt"] = {"task": runner.submit(f"Corruptions on {src.name}", work).id}

        @st.fragment(run_every=1.0)
        def corruption_panel() -> None:
            def render(table):
                frame = pd.DataFrame([{"corruption": r.corruption, "severity": r.severity, "accuracy": r.accuracy}
                                      for r in table.rows]).pivot(index="corruption", columns="severity", values="accuracy")
                st.markdown(f"Clean accuracy on these {table.n:,} images: **{table.clean_accuracy:.2%}**.")
                st.dataframe(frame.loc[list(CORRUPTIONS)], key="robust_corrupt_table",
                             column_config={s: st.column_config.NumberColumn(f"severity {s}", format="percent")
                                            for s in frame.columns})
                st.caption("Strength per severity 1–5: " + "; ".join(
                    f"{name} {', '.join(f'{v:g}' for v in SEVERITY_PARAMS[name])}" for name in CORRUPTIONS)
                    + " (noise σ, blur σ in px, strokes thickened/thinned by a share of one pixel, shift in px, "
                      "rotation in degrees, scale as a zoom factor).")

            task_panel("robust_corrupt", render)

        corruption_panel()

if widgets.is_open(privacy_tab):
    with privacy_tab:
        shown = state.current_dataset()  # the sidebar's dataset: private and ordinary runs trained on it
        runs = [r for r in state.run_store().list(status="completed") if r.dataset == shown]
        private = [r for r in runs if "epsilon" in r.metrics]
        public = [r for r in runs if "epsilon" not in r.metrics and r.test_accuracy is not None]
        st.markdown("**What ε means.** A model trained with (ε, δ)-differential privacy behaves almost the same "
                    "whether or not any one training image was in its data: no answer it gives can shift the odds of "
                    "guessing that an image was used by more than a factor e^ε (except with probability δ). ε = 1 "
                    "is strong protection, ε = 3 is common in practice, ε ≥ 10 promises little. The price is "
                    "accuracy: each image's gradient is clipped and noise is added to every step.")
        if not private:
            st.info(f"No private run on {state.dataset_title(shown)} yet: train the **private** preset (or switch on differential privacy in the Train "
                    "page's settings) to see accuracy against ε here.")
        else:
            best_public = max(public, key=lambda r: r.test_accuracy, default=None)
            st.plotly_chart(widgets.privacy_figure(
                [{"name": r.name, "epsilon": r.metrics["epsilon"], "accuracy": r.test_accuracy} for r in private],
                None if best_public is None else {"name": best_public.name, "accuracy": best_public.test_accuracy}),
                key="robust_privacy_chart")
            if best_public is not None:
                best_private = max(private, key=lambda r: r.test_accuracy)
                st.markdown(f"The best private run, **{widgets.plain(best_private.name)}**, reaches **{best_private.test_accuracy:.2%}** "
                            f"at ε = {best_private.metrics['epsilon']:.2f}; the best non-private run, "
                            f"**{widgets.plain(best_public.name)}**, {best_public.test_accuracy:.2%}: privacy costs "
                            f"**{(best_public.test_accuracy - best_private.test_accuracy) * 100:.2f} points** here.")
            st.dataframe(pd.DataFrame([{"run": r.name, "ε": r.metrics["epsilon"], "δ": r.metrics.get("delta"),
                                        "test accuracy": r.test_accuracy,
                                        "train time (s)": r.timings.get("train_seconds")} for r in private]),
                         hide_index=True, key="robust_privacy_table",
                         column_config={"test accuracy": st.column_config.NumberColumn(format="percent")})

"""Invest: is a bigger, pre-trained model worth it? Run the transfer experiment behind the question, watch its
points fill in, read the verdict with its numbers, and see how accuracy scales with size across every run.
"""

import pandas as pd
import streamlit as st

from core.data.datasets import DATASETS, is_available
from core.errors import DigitLabError
from core.insight.invest import (break_even_tasks, cheapest_reaching, fit_power_law, human_flops,
                                 k_order, k_text, scaling_rows, summarise, verdict)
from core.models.zoo import ZOO
from core.training.transfer import (DEFAULT_WATTS, K_CHOICES, STRATEGY_TITLES, TransferSpec, create_experiment, experiment_points,
                                    experiment_progress, get_experiment, list_experiments, live_runs, pretrain_summary,
                                    held_elsewhere, stop_experiment, submit_experiment, targets_for)
from dashboard import invest_plots, state, widgets

st.title("Invest: is pre-training worth it?")
st.caption("Pre-train a backbone on one dataset, then adapt it to another with only k labelled images per class — "
           "as a linear probe, by fine-tuning, or from scratch — and weigh accuracy against compute and labels.")
jobs, store = state.job_manager(), state.run_store()
EXPERIMENT = "invest_experiment"  # the experiment this session looks at

experiment_tab, scaling_tab = st.tabs(["Transfer experiment", "Scaling across runs"], key="invest_tab",
                                      on_change="rerun")


def new_experiment_form() -> None:
    """Set up an experiment; Launch records it and queues its runs on the job manager."""
    available = [name for name in DATASETS if name == "digits" or is_available(name)]
    c1, c2, c3, c4 = st.columns(4)
    source = c1.selectbox("Pre-train on", available, key="invest_source", format_func=state.dataset_title)
    targets = [d for d in targets_for(source) if d in available]
    target = c2.selectbox("Adapt to", targets, key="invest_target", format_func=state.dataset_title)
    model = c3.selectbox("Backbone", list(ZOO), index=list(ZOO).index("seed-cnn"), key="invest_model",
                         format_func=lambda m: ZOO[m].title)
    backbones = {r.id: r for r in store.list(status="completed", model=model, dataset=source)}
    backbone = c4.selectbox("Pre-trained model", [None, *backbones], key="invest_backbone",
                            format_func=lambda k: "Pre-train a new one" if k is None else state.run_label(backbones[k]),
                            help="Any finished run on the source dataset can serve as the pre-trained backbone.")
    c1, c2, c3 = st.columns([3, 1, 2])
    ks = c1.multiselect("Labelled images per class (k)", list(K_CHOICES), default=list(K_CHOICES), key="invest_ks",
                        format_func=k_text)
    seeds = c2.number_input("Seeds per point", 1, 10, 3, key="invest_seeds")
    name = c3.text_input("Experiment name (optional)", key="invest_name", max_chars=120)
    with st.expander("Budget (the same rule for all three strategies)"):
        b1, b2, b3, b4 = st.columns(4)
        pretrain_epochs = b1.number_input("Pre-training epochs", 1, 100, 2, key="invest_pre_epochs",
                                          disabled=backbone is not None)
        epochs = b2.number_input("Epochs per run", 1, 1000, 4, key="invest_epochs")
        epoch_images = b3.number_input("Images per epoch at least", 1, 10**6, 2000, step=500, key="invest_epoch_images",
                                       help="Few labels are repeated until an epoch holds this many images.")
        max_steps = b4.number_input("Steps per run at most", 1, 10**6, 600, step=100, key="invest_max_steps")
        pretrain_steps = b1.number_input("Stop pre-training after steps (0 = no limit)", 0, 10**6, 0,
                                         key="invest_pre_steps", disabled=backbone is not None)
    try:
        spec = TransferSpec(source=source, target=target, model=model, ks=tuple(sorted(ks, key=k_order)),
                            seeds=int(seeds), backbone=backbone, pretrain_epochs=int(pretrain_epochs),
                            pretrain_steps=int(pretrain_steps) or None, epochs=int(epochs),
                            epoch_images=int(epoch_images), max_steps=int(max_steps))
    except DigitLabError as error:
        widgets.error_box(error)
        return
    st.caption(f"{spec.run_count()} runs: {'' if backbone else 'one pre-training run, then '}3 strategies × "
               f"{len(spec.ks)} label counts × {spec.seeds} seed{'s' if spec.seeds > 1 else ''}, queued on the "
               "training worker after any run already waiting. Every run appears in Runs & compare.")
    if st.button("Launch experiment", type="primary", icon=":material/rocket_launch:", key="invest_launch"):
        try:
            state.policy().check_experiment(state.is_admin())
            exp = create_experiment(store, spec, name=name or None)
            submit_experiment(jobs, exp.id)
        except DigitLabError as error:
            widgets.error_box(error)
            return
        st.session_state[EXPERIMENT] = exp.id
        st.rerun()


def progress_line(exp) -> None:
    """Runs finished out of all, what trains now, and Stop / Continue."""
    progress = experiment_progress(store, exp)
    live = live_runs(jobs, exp)
    elsewhere = None if live else held_elsewhere(store, exp)
    bar_col, button_col = st.columns([4, 1], vertical_alignment="bottom")
    text = f"{progress['done']} of {progress['total']} runs finished"
    if live:
        job = jobs.get(live[0]).snapshot()
        current = store.get(live[0]).name
        text += f" · now: {widgets.plain(current)}" + (
            f" (step {job['step']:,}/{job['total_steps']:,})" if job["total_steps"] else " (waiting for the training worker)")
    if elsewhere is not None:
        text += f" · training in another process (pid {elsewhere.pid}, e.g. digit-lab transfer in a terminal)"
    bar_col.progress(progress["done"] / max(progress["total"], 1), text=text)
    if elsewhere is not None:  # only that process can stop it; its points appear here as they finish
        button_col.caption("Stop it where it runs (Ctrl-C)")
    elif live:
        if button_col.button("Stop", icon=":material/stop:", key="invest_stop", width="stretch"):
            try:
                state.policy().check_experiment(state.is_admin())
            except DigitLabError as error:
                widgets.error_box(error)
            else:
                stop_experiment(jobs, exp.id)
                st.rerun()
    elif progress["done"] < progress["total"]:
        if button_col.button("Continue", icon=":material/play_arrow:", key="invest_continue", width="stretch",
                             help="Resumes stopped runs from their last epoch and queues the rest."):
            try:
                state.policy().check_experiment(state.is_admin())
                submit_experiment(jobs, exp.id)
            except DigitLabError as error:
                widgets.error_box(error)
                return
            st.rerun()
    if progress["problem"]:
        st.warning(progress["problem"], icon=":material/warning:")


def results(exp, live: bool) -> None:
    """The verdict, the labels curve, accuracy against compute and the break-even, from the stored runs."""
    points, pretrain = experiment_points(store, exp), pretrain_summary(store, exp)
    summary = summarise(points)
    if not summary:
        st.info("The first points appear here as soon as their runs finish." if live else
                "No point has finished yet: press Continue to train the experiment's runs.", icon=":material/hourglass:")
        return
    full = next((p["labels"] for p in points if p["k"] == 0 and p["labels"]), None)
    st.plotly_chart(invest_plots.labels_figure(summary, full), key="invest_labels_chart")
    if pretrain["flops"] is None:
        st.info("The verdict and the compute view need the pre-trained backbone's cost: waiting for it to finish.")
        return
    finished_ks = sorted({r["k"] for r in summary}, key=k_order)
    k_col, watts_col = st.columns([3, 1])
    # On the default (10 labels per class, else the fewest) as the finished amounts change: kept from while only k = 1
    # had finished, the slider stayed there after the experiment completed, unlike a fresh visit
    default_k = 10 if 10 in finished_ks else finished_ks[0]
    before = st.session_state.get("invest_k_options") or []
    old_default = 10 if 10 in before else (before[0] if before else None)
    chosen_k = st.session_state.get("invest_k")
    if chosen_k not in finished_ks or (before != finished_ks and chosen_k == old_default):  # a choice of the
        st.session_state["invest_k"] = default_k  # visitor's own stays while it is offered
    st.session_state["invest_k_options"] = finished_ks
    k = k_col.select_slider("Verdict at labels per class", finished_ks, key="invest_k", format_func=k_text)
    device = (pretrain.get("device") or "cpu").split(":")[0]
    watts = watts_col.number_input("Assumed device power (W)", 1.0, 5000.0, DEFAULT_WATTS.get(device, 35.0),
                                   step=5.0, key="invest_watts",
                                   help="Energy = power × training time. Laptop CPU ~15–45 W, data-centre GPU ~300–700 W.")
    said = verdict(summary, pretrain, k, watts=watts)
    st.info(said.text, icon=":material/balance:")
    with st.expander("The numbers behind this verdict"):
        st.dataframe(pd.DataFrame(said.rows(), columns=["figure", "value"]), hide_index=True, key="invest_numbers")
        table = pd.DataFrame(points)[["strategy", "k", "seed", "status", "test_accuracy", "train_seconds", "flops",
                                      "run_id"]]
        st.dataframe(table, hide_index=True, key="invest_points",
                     column_config={"test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent"),
                                    "flops": st.column_config.NumberColumn("training FLOPs", format="%.3e")})
    left, right = st.columns(2)
    with left:
        c1, c2 = st.columns([5, 4])
        cost = c1.radio("Cost", list(invest_plots.COSTS), key="invest_cost", horizontal=True,
                        format_func={"flops": "FLOPs", "train_seconds": "seconds", "energy_wh": "energy"}.get)
        tasks = c2.slider("Pre-training shared by N tasks", 1, 100, 1, key="invest_tasks",
                          help="One pre-trained backbone serves many downstream tasks: its cost is divided among them.")
        st.plotly_chart(invest_plots.compute_figure(summary, pretrain, tasks, cost, watts), key="invest_compute_chart")
        st.caption("Each point is one strategy at one number of labels per class (mean over seeds). The transfer "
                   "points carry the pre-training cost divided by the number of tasks sharing it.")
    with right:
        break_even(summary, pretrain, said.numbers)


def break_even(summary, pretrain, numbers) -> None:
    """Total compute on N tasks to reach the pre-trained model's accuracy, both ways; where they cross."""
    if not numbers.get("strategy"):
        return
    if numbers["points_gained"] <= 0:
        st.caption("The pre-trained model is no more accurate than training from scratch at this many labels, so "
                   "there is nothing for pre-training to pay back.")
        return
    match = cheapest_reaching(summary, "scratch", numbers["transfer_accuracy"])
    if match is None:
        st.caption(f"From scratch never reaches {numbers['transfer_accuracy']:.1%} in this experiment, so there is "
                   "no compute break-even to draw: pre-training is the only way to that accuracy here.")
        return
    tasks = break_even_tasks(numbers["pretrain_flops"], numbers["transfer_flops"], match["flops"])
    st.plotly_chart(invest_plots.break_even_figure(numbers["pretrain_flops"], numbers["transfer_flops"], match["flops"],
                                                   tasks, "training FLOPs"), key="invest_break_even_chart")
    st.caption(f"To reach {numbers['transfer_accuracy']:.1%}: pre-training {human_flops(numbers['pretrain_flops'])} "
               f"once, then {human_flops(numbers['transfer_flops'])} per task ({STRATEGY_TITLES[numbers['strategy']]}, "
               f"{k_text(numbers['k'])} per class), against {human_flops(match['flops'])} per task from scratch "
               f"({k_text(match['k'])} per class)." + ("" if tasks is not None else
                                                        " Adapting costs no less, so the lines never cross."))


@st.fragment(run_every=2.0)
def live_experiment(exp_id: str) -> None:
    """While the experiment trains: progress and the points so far; one full rerun when it stops."""
    exp = get_experiment(store, exp_id)
    if not live_runs(jobs, exp) and held_elsewhere(store, exp) is None:
        st.rerun()
    progress_line(exp)
    results(exp, live=True)


if widgets.is_open(experiment_tab):
    with experiment_tab:
        experiments = list_experiments(store)
        chosen = st.session_state.get(EXPERIMENT)
        if experiments and chosen not in {e.id for e in experiments}:
            st.session_state[EXPERIMENT] = experiments[0].id
        with st.expander("New experiment", expanded=not experiments, icon=":material/add:"):
            new_experiment_form()
        if experiments:
            labels = {e.id: f"{e.name} · {e.id}" for e in experiments}
            exp_id = st.selectbox("Experiment", list(labels), key=EXPERIMENT, format_func=labels.get)
            exp = get_experiment(store, exp_id)
            if live_runs(jobs, exp) or held_elsewhere(store, exp) is not None:
                live_experiment(exp.id)
            else:
                progress_line(exp)
                results(exp, live=False)

if widgets.is_open(scaling_tab):
    with scaling_tab:
        c1, c2, c3 = st.columns([2, 2, 2])
        dataset = c1.selectbox("Dataset", list(DATASETS), key="invest_scale_dataset", format_func=state.dataset_title)
        axis = c2.radio("Size measured as", ["flops", "params"], key="invest_scale_axis", horizontal=True,
                        format_func={"flops": "training FLOPs", "params": "parameters"}.get)
        held = c3.toggle("Include runs held back by other things than size", key="invest_scale_few",
                         help="Runs trained on a subset of the labels (transfer points, data studies), with "
                              "differential privacy or on attacked images sit below the trend for reasons other "
                              "than their size.")
        every = scaling_rows(store.list(), dataset, comparable_only=False)
        rows = every if held else [r for r in every if not r["aside"]]
        left_out = len(every) - len(rows)
        if not rows:
            st.info(f"No finished run on {state.dataset_title(dataset)} yet: train a few on the Train page (for "
                    "example the fast, best and seed presets) to see how accuracy grows with size.")
        else:
            fit = fit_power_law([r[axis] for r in rows], [r["test_accuracy"] for r in rows],
                                "FLOPs" if axis == "flops" else "parameters")
            st.plotly_chart(invest_plots.scaling_figure(rows, axis, fit), key="invest_scaling_chart")
            if fit is None:
                st.caption("A trend needs runs of at least three different sizes (a line through two fits them "
                           "exactly and says nothing).")
            else:
                st.markdown(f"**{fit.equation}** — {fit.per_tenfold}.")
                if fit.b > -0.01:
                    st.caption("A flat or rising slope: on these runs, being bigger did not buy accuracy.")
        st.caption(f"{len(rows)} finished run{'s' if len(rows) != 1 else ''} on {state.dataset_title(dataset)}"
                   + (f" ({left_out} run{'s' if left_out != 1 else ''} held back by few labels, privacy or "
                      "attacks left out: see the toggle)" if left_out else "") + "; error = 1 − test accuracy, fitted as a "
                   "straight line in log-log (a power law). Training FLOPs are estimated as 3× the forward pass per "
                   "image trained on (validation and testing excluded).")

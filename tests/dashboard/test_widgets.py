"""The shared figures look right on a laptop screen: no stray legends, no clipped labels, sane axes."""
from __future__ import annotations

import numpy as np

from dashboard import explain_plots, invest_plots, widgets


def test_a_single_epoch_does_not_stretch_the_accuracy_axis():
    fig = widgets.accuracy_figure([{"epoch": 1, "train_accuracy": 0.91, "val_accuracy": 0.95}])
    low, high = fig.layout.yaxis.range
    assert 0.85 < low < 0.91 and 0.95 < high <= 1.0  # not 0-150%


def test_a_single_run_does_not_stretch_the_scaling_chart_either():
    # Invest's "Scaling across runs" with one finished run showed it on an axis from 0% to 150%
    row = {"kind": "cnn", "test_accuracy": 0.9911, "flops": 4e12, "params": 93_322, "model": "seed-cnn",
           "name": "seed-cnn on mnist"}
    low, high = invest_plots.scaling_figure([row], "flops", None).layout.yaxis.range
    assert 0.98 < low < 0.9911 < high <= 1.0
    assert invest_plots.scaling_figure([], "flops", None).layout.yaxis.range is None  # nothing yet: plotly's own


def test_probability_bars_label_every_class_and_scale_to_the_probability():
    import re

    block = widgets.probability_bars([0.75, 0.25] + [0.0] * 8, [str(i) for i in range(10)], 0, bar_px=100)
    heights = [int(h) for h in re.findall(r"height:(\d+)px;background", block)]
    assert heights == [75, 25] + [1] * 8  # an empty class still shows a sliver, a certain one its full height
    assert ">100%<" not in block and ">75%<" in block and ">25%<" in block
    assert block.count(widgets.PALETTE[0]) == 1  # only the answer is highlighted
    assert 'aria-label="Probabilities: 0 75.0%, 1 25.0%, 2 0.0%' in block


def test_probability_bars_escape_class_names():
    block = widgets.probability_bars([1.0, 0.0], ["<b>x</b>", "T-shirt/top"], 0, title="A & B")
    assert "<b>x</b>" not in block and "&lt;b&gt;x&lt;/b&gt;" in block and "A &amp; B" in block


def test_attribution_grid_has_no_legend():
    maps = np.random.default_rng(0).normal(size=(10, 28, 28))
    fig = explain_plots.attribution_grid(maps, np.zeros((28, 28)), [str(i) for i in range(10)], {3: "← predicted"}, "t")
    assert fig.layout.showlegend is False


def test_verdicts_read_as_english():
    assert [widgets.article(c) for c in ("8", "7", "Ankle boot", "T-shirt/top", "1")] == ["an", "a", "an", "a", "a"]


def test_the_live_loss_chart_carries_the_learning_rate_the_run_reported():
    steps = [(1, 2.3, 1e-4), (2, 2.1, 2e-4), (3, 1.9, 3e-4)]
    fig = widgets.loss_figure(steps, [])
    lr = next(trace for trace in fig.data if trace.name == "learning rate")
    assert list(lr.y) == [1e-4, 2e-4, 3e-4] and lr.yaxis == "y2"
    low, high = fig.layout.yaxis2.range  # from 0, never negative, to just above the highest rate
    assert low == 0 and 3e-4 < high < 4e-4
    constant = widgets.loss_figure([(1, 2.3, 1e-3), (2, 2.1, 1e-3)], [])  # Adam's fixed rate: plotly alone went
    assert tuple(constant.layout.yaxis2.range) == (0, 1e-3 * 1.15)       # from -0.9 to 0.7


def test_figures_show_each_label_and_value_with_its_tooltip_escaped():
    block = widgets.figures([("Training images", "55,000", None), ("Ink <b>", "13.2%", 'Share "above" half')])
    assert ">Training images<" in block and ">55,000<" in block and ">13.2%<" in block
    assert "Ink &lt;b&gt;" in block and 'title="Share &quot;above&quot; half"' in block
    assert block.count("title=") == 1  # a figure without a tooltip has none


def test_a_run_name_is_drawn_as_written_in_legends_and_labels_not_as_markup():
    name = "<b>bold</b> & <a href='x'>link</a>"
    legend = widgets.overlay_figure({name: [{"epoch": 1, "val_accuracy": 0.9}]}, "val_accuracy", "t").data[0].name
    assert legend == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;a href='x'&gt;link&lt;/a&gt;"  # plotly shows the entities as text
    row = {"name": name, "train_seconds": 3.0, "test_accuracy": 0.9, "pareto_train_seconds": True}
    assert widgets.cost_benefit_figure([row], "train_seconds", "s").data[0].text == (legend,)


def test_cost_benefit_labels_lean_inwards_and_log_ticks_are_written_out():
    rows = [{"name": f"run {i}", "train_seconds": s, "test_accuracy": 0.9 + i / 100, "pareto_train_seconds": False}
            for i, s in enumerate([2.4, 6.0, 51.6])]
    fig = widgets.cost_benefit_figure(rows, "train_seconds", "training time (s)", log_x=True)
    assert fig.data[0].textposition == ("top right", "top right", "top left")  # the edges' names stay on the chart
    assert fig.data[0].cliponaxis is False
    assert list(fig.layout.xaxis.ticktext) == ["2", "5", "10", "20", "50"]  # not "9 10 2 3 4 5", twenty as a bare 2
    assert list(fig.layout.xaxis.tickvals) == [2, 5, 10, 20, 50]
    assert widgets.log_ticks([93_322, 215_194])["ticktext"] == ["100k", "200k"]
    assert widgets.log_ticks([0, 0]) == {}  # a run with no parameters recorded: no log of zero
    rows[0]["train_seconds"] = 0.0  # a zero cost cannot sit on a log axis: the chart stays linear
    assert widgets.cost_benefit_figure(rows, "train_seconds", "s", log_x=True).layout.xaxis.type is None



def test_the_labels_chart_says_all_only_when_all_was_run_and_ticks_whole_label_counts():
    rows = [{"strategy": st, "k": k, "n": 1, "mean": 0.5, "std": 0.0, "low": 0.5, "high": 0.5, "train_seconds": 1.0,
             "flops": 1e9} for st in ("scratch", "finetune") for k in (1, 5)]
    fig = invest_plots.labels_figure(rows, 60_000)
    assert fig.layout.xaxis.title.text == "labelled images per class (log scale)"  # no "all" point was run
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "5"]  # not 1.5, 2.5, 3.5 labelled images
    rows += [{**rows[0], "k": invest_plots.ALL}]
    assert "the last point is all of them" in invest_plots.labels_figure(rows, 60_000).layout.xaxis.title.text


def test_a_confidence_under_a_threshold_never_reads_as_reaching_it():
    from dashboard.widgets import percent_down

    # "Not sure — draw again (7? only 95%)" under a 0.95 threshold: the 94.8% had been rounded up
    assert percent_down(0.948) == "94.8%" and percent_down(0.9499) == "94.9%" and percent_down(0.32) == "32%"
    assert percent_down(0.07) == "7%" and percent_down(0.0) == "0%"

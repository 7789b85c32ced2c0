"""The Invest page's figures: accuracy against labels, accuracy against compute, break-even, scaling.

Each function takes plain rows from core.insight.invest and returns a plotly figure.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go

from core.insight.invest import ALL, PowerLaw, amortised, human_flops, k_order, k_text
from dashboard.widgets import PALETTE, accuracy_range, chart_text, layout, log_ticks

STRATEGY_STYLE = {"finetune": ("Fine-tuned (all layers)", PALETTE[0]), "probe": ("Linear probe", PALETTE[2]),
                  "scratch": ("From scratch", PALETTE[1])}
COSTS = {"flops": "training FLOPs per task", "train_seconds": "training seconds per task",
         "energy_wh": "energy per task (Wh)"}


def _band_color(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},0.15)"


def labels_figure(summary: Sequence[dict[str, Any]], full_labels: int | None) -> go.Figure:
    """Mean test accuracy against labelled images per class (log x), a band from the worst to the best seed."""
    fig = go.Figure()
    all_x = full_labels / 10 if full_labels else None  # "all" sits at its real per-class count
    for strategy, (name, color) in STRATEGY_STYLE.items():
        rows = sorted((r for r in summary if r["strategy"] == strategy), key=lambda r: k_order(r["k"]))
        rows = [r for r in rows if r["k"] != ALL or all_x]
        if not rows:
            continue
        x = [all_x if r["k"] == ALL else r["k"] for r in rows]
        text = [k_text(r["k"]) for r in rows]
        fig.add_scatter(x=x + x[::-1], y=[r["high"] for r in rows] + [r["low"] for r in rows][::-1], fill="toself",
                        mode="lines",  # plotly's default for a few points adds markers at the band's corners
                        fillcolor=_band_color(color), line=dict(width=0), hoverinfo="skip", showlegend=False)
        fig.add_scatter(x=x, y=[r["mean"] for r in rows], mode="lines+markers", name=name, line=dict(color=color),
                        customdata=[[t, r["n"], r["std"]] for t, r in zip(text, rows)],
                        hovertemplate="%{customdata[0]} per class<br>mean %{y:.1%} ± %{customdata[2]:.1%} "
                                      "(%{customdata[1]} seeds)<extra>" + name + "</extra>")
    xs = [all_x if r["k"] == ALL else r["k"] for r in summary if r["k"] != ALL or all_x]
    fig.update_xaxes(type="log", **log_ticks(xs))  # 1, 2, 5, 10: not 1.5, 2.5, 3.5 labelled images
    fig.update_yaxes(tickformat=".0%")
    has_all = any(r["k"] == ALL for r in summary) and all_x
    return layout(fig, "Accuracy against labelled images per class (band: worst to best seed)",
                  "labelled images per class (log scale" + ("; the last point is all of them)" if has_all else ")"),
                  "test accuracy", height=340)


def compute_figure(summary: Sequence[dict[str, Any]], pretrain: dict[str, Any], tasks: int, cost: str,
                   watts: float) -> go.Figure:
    """Accuracy against cost per task; transfer points carry the pre-training cost shared by `tasks` tasks."""
    def value(row: dict[str, Any], key: str) -> float:
        return row["train_seconds"] * watts / 3600 if key == "energy_wh" else row[key]

    fig = go.Figure()
    p_cost = value(pretrain, cost)
    for strategy, (name, color) in STRATEGY_STYLE.items():
        rows = sorted((r for r in summary if r["strategy"] == strategy), key=lambda r: k_order(r["k"]))
        if not rows:
            continue
        own = [value(r, cost) for r in rows]
        x = own if strategy == "scratch" else [amortised(c, p_cost, tasks) for c in own]
        fig.add_scatter(x=x, y=[r["mean"] for r in rows], mode="markers+text", name=name,
                        text=[k_text(r["k"]) for r in rows], textposition="top center", cliponaxis=False,
                        marker=dict(size=10, color=color),  # the top point's label is not cut at the plot's edge
                        hovertemplate="%{text} per class<br>%{y:.1%}<br>cost %{x:.3s}<extra>" + name + "</extra>")
    fig.update_xaxes(type="log")
    fig.update_yaxes(tickformat=".0%")
    shared = "pre-training counted in full" if tasks == 1 else f"pre-training shared by {tasks} tasks"
    return layout(fig, f"Accuracy against cost ({shared})",
                  COSTS[cost] + " (log scale)", "test accuracy", height=340)


def break_even_figure(pretrain_cost: float, adapt_cost: float, scratch_cost: float, tasks: float | None,
                      cost_label: str) -> go.Figure:
    """Total cost against the number of downstream tasks: pre-train once + adapt each, or scratch each time."""
    last = max(10, math.ceil((tasks or 5) * 2))
    n = np.arange(0, last + 1)
    fig = go.Figure()
    fig.add_scatter(x=n, y=pretrain_cost + n * adapt_cost, mode="lines", name="pre-train once, then adapt",
                    line=dict(color=STRATEGY_STYLE["finetune"][1]))
    fig.add_scatter(x=n, y=n * scratch_cost, mode="lines", name="from scratch every time",
                    line=dict(color=STRATEGY_STYLE["scratch"][1]))
    if tasks is not None:
        fig.add_vline(x=tasks, line_dash="dash", line_color="#475569",
                      annotation_text=f"break-even: {tasks:.1f} tasks", annotation_position="top left")
    return layout(fig, "Total compute to reach the same accuracy on N tasks", "downstream tasks",
                  cost_label, height=300)


def scaling_figure(rows: Sequence[dict[str, Any]], x: str, fit: PowerLaw | None) -> go.Figure:
    """Test accuracy against parameters or training FLOPs for every finished run, with the fitted power law."""
    fig = go.Figure()
    kinds = sorted({r["kind"] for r in rows})
    for i, kind in enumerate(kinds):
        chosen = [r for r in rows if r["kind"] == kind]
        fig.add_scatter(x=[r[x] for r in chosen], y=[r["test_accuracy"] for r in chosen], mode="markers", name=kind,
                        marker=dict(size=9, color=PALETTE[i % len(PALETTE)]),
                        text=[chart_text(r["name"]) for r in chosen],
                        customdata=[[r["model"], human_flops(r["flops"]), r["params"]] for r in chosen],
                        hovertemplate="%{text}<br>%{customdata[0]}, %{customdata[2]:,} params<br>"
                                      "%{customdata[1]} training<br>%{y:.2%}<extra></extra>")
    if fit is not None:
        xs = np.geomspace(min(r[x] for r in rows), max(r[x] for r in rows), 50)
        fig.add_scatter(x=xs, y=1 - fit.error_at(xs), mode="lines", name=fit.equation,
                        line=dict(color="#475569", dash="dash"))
    fig.update_xaxes(type="log", **(log_ticks([r[x] for r in rows]) if rows else {}))
    fig.update_yaxes(tickformat=".1%", range=accuracy_range([r["test_accuracy"] for r in rows]) if rows else None)
    label = "parameters" if x == "params" else "training FLOPs"
    return layout(fig, f"Test accuracy against {label}", f"{label} (log scale)", "test accuracy", height=380)

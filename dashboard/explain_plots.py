"""Figures for the Explain page: attribution heatmaps over the digit, LIME segments, deletion curves, feature maps.

Each function takes numpy arrays from `core.insight.explain` / `core.insight.trust` / `core.insight.layers` and returns a plotly figure.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.widgets import PALETTE, layout

DIVERGING = "RdBu_r"  # red = pushes towards the class, blue = pushes away


def _outline(image: np.ndarray) -> go.Contour:
    """The digit's outline (half-intensity contour), drawn over a heatmap without hiding it."""
    return go.Contour(z=image, contours=dict(start=0.5, end=0.5, size=1, coloring="none"), showscale=False,
                      line=dict(color="rgba(30,30,30,0.55)", width=1), hoverinfo="skip")


def _symmetric(maps: np.ndarray) -> float:
    return float(np.abs(maps).max()) or 1.0


def attribution_grid(maps: np.ndarray, image: np.ndarray, titles: Sequence[str], highlight: dict[int, str],
                     title: str, cols: int = 5) -> go.Figure:
    """One heatmap per class (rows of `maps`) over the faint digit; `highlight` maps class -> marker text."""
    rows = int(np.ceil(len(maps) / cols))
    names = [f"<b>{t} {highlight[i]}</b>" if i in highlight else t for i, t in enumerate(titles)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.02, vertical_spacing=0.08)
    bound = _symmetric(maps)
    for i, m in enumerate(maps):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(go.Heatmap(z=m, colorscale=DIVERGING, zmin=-bound, zmax=bound, showscale=i == 0,
                                 hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra></extra>"), r, c)
        fig.add_trace(_outline(image), r, c)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return layout(fig, title, "", "", height=230 * rows + 60).update_layout(showlegend=False)


def single_map(values: np.ndarray, image: np.ndarray, title: str, height: int = 330) -> go.Figure:
    return attribution_grid(values[None], image, [""], {}, title, cols=1).update_layout(height=height, width=360)


def segments_figure(segments: np.ndarray, image: np.ndarray, weights: np.ndarray, title: str) -> go.Figure:
    """LIME: the superpixels (numbered) and each one's weight painted on it."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["superpixels", "weight for the predicted class"],
                        horizontal_spacing=0.04)
    rng = np.random.default_rng(0)
    palette = rng.permutation(segments.max() + 1)
    fig.add_trace(go.Heatmap(z=palette[segments], colorscale="Turbo", showscale=False, opacity=0.55,
                             customdata=segments, hovertemplate="segment %{customdata}<extra></extra>"), 1, 1)
    fig.add_trace(_outline(image), 1, 1)
    heat = weights[segments]
    bound = _symmetric(heat)
    fig.add_trace(go.Heatmap(z=heat, colorscale=DIVERGING, zmin=-bound, zmax=bound,
                             hovertemplate="weight %{z:.3g}<extra></extra>"), 1, 2)
    fig.add_trace(_outline(image), 1, 2)
    for sid in range(segments.max() + 1):
        ys, xs = np.nonzero(segments == sid)
        if len(xs):
            fig.add_annotation(x=xs.mean(), y=ys.mean(), text=str(sid), showarrow=False, font=dict(size=9), row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return layout(fig, title, "", "", height=380).update_layout(showlegend=False)


def deletion_figure(curves: dict[str, object]) -> go.Figure:
    """p(class) as the ink is deleted in each method's order, against random-ink and brightest-first orders."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        fig.add_scatter(x=curve.fractions, y=curve.probs, mode="lines", name=f"{name} (AUC {curve.auc:.3f})",
                        line=dict(color=PALETTE[i % len(PALETTE)]))
    first = next(iter(curves.values()))
    fig.add_scatter(x=first.fractions, y=first.random_probs, mode="lines",
                    name=f"random ink order (AUC {first.random_auc:.3f})", line=dict(color="#94a3b8", dash="dash"))
    fig.add_scatter(x=first.fractions, y=first.intensity_probs, mode="lines",
                    name=f"brightest first (AUC {first.intensity_auc:.3f})", line=dict(color="#64748b", dash="dot"))
    fig.update_xaxes(tickformat=".0%")
    return layout(fig, "Deletion curves: a faithful map makes the probability fall fast", "share of the ink deleted",
                  "p(predicted class)", height=360)


def feature_maps(values: np.ndarray, title: str, limit: int = 32, cols: int = 8) -> go.Figure:
    """Channels of a (C, H, W) activation as small heatmaps."""
    maps = values[:limit]
    rows = int(np.ceil(len(maps) / cols))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.01, vertical_spacing=0.02)
    for i, m in enumerate(maps):
        fig.add_trace(go.Heatmap(z=m, colorscale="Viridis", showscale=False,
                                 hovertemplate=f"channel {i}: %{{z:.3g}}<extra></extra>"), i // cols + 1, i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return layout(fig, title, "", "", height=110 * rows + 60).update_layout(showlegend=False)


def signed_images(images: np.ndarray, title: str, limit: int = 32, cols: int = 8) -> go.Figure:
    """Weights (filters, hidden units) as small diverging heatmaps on a shared scale."""
    shown = images[:limit]
    rows = int(np.ceil(len(shown) / cols))
    bound = _symmetric(shown)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.01, vertical_spacing=0.02)
    for i, m in enumerate(shown):
        fig.add_trace(go.Heatmap(z=m, colorscale=DIVERGING, zmin=-bound, zmax=bound, showscale=False,
                                 hovertemplate=f"#{i}: %{{z:.3g}}<extra></extra>"), i // cols + 1, i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return layout(fig, title, "", "", height=110 * rows + 60).update_layout(showlegend=False)


def vector_figure(values: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Bar(y=values, marker_color=PALETTE[0]))
    return layout(fig, title, "unit", "activation", height=260)


def importance_grid(overall: np.ndarray, per_class: np.ndarray, classes: Sequence[str]) -> go.Figure:
    """Mean |attribution| per pixel: overall, then per class."""
    maps = np.concatenate([overall[None], per_class])
    names = ["all classes", *classes]
    cols = 6
    rows = int(np.ceil(len(maps) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.02, vertical_spacing=0.1)
    for i, m in enumerate(maps):
        fig.add_trace(go.Heatmap(z=m, colorscale="Hot", showscale=False, hovertemplate="%{z:.3g}<extra></extra>"),
                      i // cols + 1, i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
    fig.update_xaxes(showticklabels=False)
    return layout(fig, "Global pixel importance (mean |attribution|)", "", "", height=210 * rows + 60).update_layout(showlegend=False)

"""Small shared rendering helpers: the training, comparison, prediction and evaluation figures, digit images.

Each function takes plain data (lists, dicts, numpy arrays) and returns a figure or draws with `st`;
the explanation figures live in dashboard/explain_plots.py.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import math
from typing import Any, Iterable, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from core.data.datasets import unit
from core.insight.compare import escape_markdown

PALETTE = ["#4f46e5", "#e11d48", "#059669", "#d97706", "#0891b2", "#7c3aed", "#65a30d", "#db2777"]


def percent_down(share: float) -> str:
    """A share as a percentage rounded *down* to 0.1 point: a confidence under a threshold never reads as reaching it
    (94.8% under 0.95 read "only 95%" when rounded)."""
    return f"{math.floor(share * 1000 + 1e-9) / 10:g}%"


def layout_spec(title: str, x: str, y: str, height: int = 300) -> dict[str, Any]:
    """Every figure's frame as a plain dict: title, axis titles, height, margins, a horizontal legend on top."""
    return dict(title=dict(text=title, y=0.98, yanchor="top"), xaxis=dict(title=dict(text=x)),
                yaxis=dict(title=dict(text=y)), height=height, margin=dict(l=10, r=10, t=70, b=10),
                legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1))


def changing_key(base: str, texts: Iterable[str]) -> str:
    """A key for a select box whose options or their texts change while it is on screen (a drawing deleted or
    relabelled, a set's count). The browser keeps a keyed box's texts as first drawn and answers with a position: after
    a delete it showed "#3" while the page acted on another drawing, and a second Delete removed one never chosen.
    Under a key that changes with its texts the box is drawn anew; the caller puts the choice back if it still exists."""
    return f"{base}_{hashlib.sha256(chr(31).join(texts).encode()).hexdigest()[:12]}"


def chart_text(text: str) -> str:
    """A run's name (or anything a visitor typed) as plotly shows it: its own markup (<b>, <br>, <a href>) escaped, so
    a name is drawn as written in legends, labels and hovers."""
    return html.escape(str(text), quote=False)


def log_ticks(values: Sequence[float]) -> dict[str, Any]:
    """Tick values and labels for a log axis over `values`: 1, 2 and 5 times powers of ten, written out (20, 50, 2k),
    where plotly's own ticks read "9 10 2 3 4", twenty as a bare 2."""
    values = [v for v in values if v > 0]
    if not values:  # nothing a log axis can show: plotly's own ticks
        return {}
    low, high = min(values), max(values)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    ticks = [t for t in ticks if low / 1.5 <= t <= high * 1.5] or [low, high]
    return dict(tickvals=ticks, ticktext=[_si(t) for t in ticks])


def _si(value: float) -> str:
    """20 → "20", 2000 → "2k", 2e9 → "2G"."""
    for suffix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def layout(fig: go.Figure, title: str, x: str, y: str, height: int = 300) -> go.Figure:
    fig.update_layout(layout_spec(title, x, y, height))
    return fig


def loss_figure(steps: Sequence[tuple[int, float, float]], history: Sequence[dict[str, Any]]) -> go.Figure:
    """Training loss per step, train/val loss per epoch on the same step axis, and the learning rate the
    run reported at each step on a second axis."""
    fig = go.Figure()
    if steps:
        s = np.asarray(steps)
        fig.add_scatter(x=s[:, 0], y=s[:, 1], mode="lines", name="train loss (step)", line=dict(color="#c7d2fe"))
        fig.add_scatter(x=s[:, 0], y=s[:, 2], mode="lines", name="learning rate", yaxis="y2",
                        line=dict(color=PALETTE[2], width=1, dash="dot"))
        # From 0 to just above the highest rate: left to itself, a constant rate (Adam at 1e-3) got an axis from
        # -0.9 to 0.7, negative learning rates on a teacher's screen
        top = float(s[:, 2].max()) * 1.15 or 1e-3
        fig.update_layout(yaxis2=dict(overlaying="y", side="right", showgrid=False, tickformat=".1e",
                                      range=[0, top], nticks=4,
                                      title=dict(text="learning rate", font=dict(color=PALETTE[2]))))
    if history:
        x = [r["step"] for r in history]
        fig.add_scatter(x=x, y=[r["train_loss"] for r in history], mode="lines+markers", name="train loss (epoch)",
                        line=dict(color=PALETTE[0]))
        fig.add_scatter(x=x, y=[r["val_loss"] for r in history], mode="lines+markers", name="val loss",
                        line=dict(color=PALETTE[1]))
    return layout(fig, "Loss and learning rate", "step", "cross-entropy")


def accuracy_range(values: Sequence[float]) -> list[float]:
    """A y range for accuracies: around the values with a little room, never below 0% or above 100% (left to itself,
    plotly stretched a single point to 0-150%)."""
    pad = max(0.005, (max(values) - min(values)) * 0.15)
    return [max(0.0, min(values) - pad), min(1.0, max(values) + pad)]


def accuracy_figure(history: Sequence[dict[str, Any]]) -> go.Figure:
    fig = go.Figure()
    epochs = [r["epoch"] for r in history]
    fig.add_scatter(x=epochs, y=[r["train_accuracy"] for r in history], mode="lines+markers", name="train",
                    line=dict(color=PALETTE[0]))
    fig.add_scatter(x=epochs, y=[r["val_accuracy"] for r in history], mode="lines+markers", name="validation",
                    line=dict(color=PALETTE[1]))
    fig.update_yaxes(tickformat=".1%", range=accuracy_range(
        [r[k] for r in history for k in ("train_accuracy", "val_accuracy")]))
    fig.update_xaxes(dtick=1, range=[0.5, max(epochs) + 0.5])
    return layout(fig, "Accuracy", "epoch", "accuracy")


def lr_figure(steps: Sequence[int], lrs: Sequence[float], done: int | None = None) -> go.Figure:
    """The learning-rate schedule; `done` marks how far training has got."""
    fig = go.Figure()
    fig.add_scatter(x=list(steps), y=list(lrs), mode="lines", name="learning rate", line=dict(color=PALETTE[2]))
    if done:
        fig.add_vline(x=done, line_dash="dot", line_color="#64748b")
    return layout(fig, "Learning-rate schedule", "step", "learning rate", height=220)


def overlay_figure(histories: dict[str, Sequence[dict[str, Any]]], metric: str, title: str) -> go.Figure:
    """One line per run of an epoch metric (comparison view)."""
    fig = go.Figure()
    for i, (name, rows) in enumerate(histories.items()):
        fig.add_scatter(x=[r["epoch"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers",
                        name=chart_text(name),
                        line=dict(color=PALETTE[i % len(PALETTE)]))
    if "accuracy" in metric:
        fig.update_yaxes(tickformat=".2%")
    return layout(fig, title, "epoch", metric.replace("_", " "))


def cost_benefit_figure(rows: Sequence[dict[str, Any]], cost: str, label: str, log_x: bool = False) -> go.Figure:
    """Test accuracy against one cost, Pareto-optimal runs joined and marked."""
    fig = go.Figure()
    xs = [r[cost] for r in rows]
    ys = [r["test_accuracy"] for r in rows]
    # Labels lean inwards, so the leftmost and rightmost runs' names are not cut off at the chart's edges
    log_x = log_x and bool(xs) and min(xs) > 0  # a zero cost cannot sit on a log axis: linear then
    scale = (lambda v: math.log10(v)) if log_x else float
    middle = (scale(min(xs)) + scale(max(xs))) / 2 if xs else 0.0
    fig.add_scatter(x=xs, y=ys, mode="markers+text", text=[chart_text(r["name"]) for r in rows],
                    textposition=["top right" if scale(x) <= middle else "top left" for x in xs], cliponaxis=False,
                    marker=dict(size=11, color=[PALETTE[1] if r[f"pareto_{cost}"] else "#94a3b8" for r in rows]),
                    name="runs", hovertemplate="%{text}<br>%{x}<br>%{y:.2%}<extra></extra>")
    front = sorted((r[cost], r["test_accuracy"]) for r in rows if r[f"pareto_{cost}"])
    if len(front) > 1:
        fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                        line=dict(color=PALETTE[1], dash="dash", shape="hv"))
    fig.update_yaxes(tickformat=".2%")
    if log_x:
        fig.update_xaxes(type="log", **log_ticks(xs))
    return layout(fig, f"Accuracy against {label}", label, "test accuracy", height=360)


def probability_bars(probs: Sequence[float], classes: Sequence[str], highlight: int | None = None,
                     title: str = "Probabilities", bar_px: int = 110) -> str:
    """One bar per class, the answer highlighted, each bar labelled with its percentage, as a small HTML block for
    `st.html`. Not a plotly figure: Draw & predict redraws it on every stroke, for every visitor of a shared server,
    and plotly cost the server ~12 ms to build and serialise it and each browser a full chart render per stroke."""
    probs = [min(max(float(p), 0.0), 1.0) for p in probs]
    cells, names = [], []
    for i, (name, p) in enumerate(zip(classes, probs)):
        colour = PALETTE[0] if i == highlight else "#a5b4fc"
        weight = "font-weight:600;" if i == highlight else ""
        cells.append(f'<div style="display:flex;flex-direction:column;justify-content:flex-end;align-items:center;'
                     f'min-width:0"><span style="font-size:0.7rem;{weight}">{p:.0%}</span>'
                     f'<div style="width:100%;height:{max(1, round(p * bar_px))}px;background:{colour};'
                     f'border-radius:3px 3px 0 0"></div></div>')
        names.append(f'<span style="text-align:center;font-size:0.75rem;line-height:1.1;overflow-wrap:anywhere;'
                     f'min-width:0;{weight}">{html.escape(str(name))}</span>')
    grid = _grid(len(probs), "4px")
    summary = ", ".join(f"{name} {p:.1%}" for name, p in zip(classes, probs))
    return (f'<div role="img" aria-label="{html.escape(title)}: {html.escape(summary)}">'
            f'<div style="font-weight:600;margin-bottom:0.25rem">{html.escape(title)}</div>'
            f'<div style="{grid};align-items:end;height:{bar_px + 18}px;border-bottom:1px solid #9ca3af">'
            f'{"".join(cells)}</div><div style="{grid};margin-top:2px">{"".join(names)}</div></div>')


def png_data_url(image: Any) -> str:
    """A greyscale image (uint8 or float in [0, 1], numpy or torch) as a PNG `data:` URL, at its own size: an HTML
    block shows it enlarged with `image-rendering: pixelated`, without a media file for the browser to fetch."""
    arr = (np.asarray(unit(image.cpu() if hasattr(image, "cpu") else image), np.float32).clip(0, 1) * 255).round()
    buffer = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _grid(columns: int, gap: str) -> str:
    """The style of a row of `columns` equal columns that never overflow their container."""
    return f"display:grid;grid-template-columns:repeat({columns},minmax(0,1fr));gap:{gap}"


def _pixel_figure(image: Any, caption: str, width: str, align: str = "center") -> str:
    """One greyscale image, enlarged by the browser with square pixels to `width`, over its caption."""
    return (f'<figure style="margin:0;min-width:0;width:{width}"><img src="{png_data_url(image)}" '
            f'alt="{html.escape(caption)}" style="width:100%;image-rendering:pixelated;display:block;border-radius:2px">'
            f'<figcaption style="font-size:0.8rem;opacity:0.7;text-align:{align};margin-top:0.2rem">'
            f'{html.escape(caption)}</figcaption></figure>')


def tile_grid(images: Sequence[Any], captions: Sequence[str], columns: int = 5) -> str:
    """Greyscale images with their captions in a grid of `columns`, each as wide as its column, as one HTML block
    (Home's samples: one element and no media requests instead of ten images)."""
    cells = "".join(_pixel_figure(image, caption, "100%") for image, caption in zip(images, captions))
    return f'<div style="{_grid(columns, "1rem")}">{cells}</div>'


def figures(items: Sequence[tuple[str, str, str | None]]) -> str:
    """A row of labelled figures, (label, value, tooltip or None), drawn like `st.metric` but as one HTML block:
    Home shows them to a fresh browser, which would otherwise fetch st.metric's scripts before the page is done."""
    def cell(label: str, value: str, tip: str | None) -> str:
        shown = (f'<span style="text-decoration:underline dotted;cursor:help">{html.escape(label)}</span>' if tip
                 else html.escape(label))
        title = f' title="{html.escape(tip)}"' if tip else ""
        return (f'<div style="min-width:0"{title}>'
                f'<div style="font-size:0.875rem">{shown}</div>'
                f'<div style="font-size:2.25rem;line-height:1.3">{html.escape(value)}</div></div>')

    return f'<div style="{_grid(len(items), "1rem")}">{"".join(cell(*item) for item in items)}</div>'


def model_view(image: Any, lines: Sequence[str], caption: str = "What the model sees (28×28)", px: int = 112) -> str:
    """The 28×28 image a model read, enlarged by the browser with square pixels (sent as a 28×28 PNG inside the
    block: no media file to fetch), beside `lines` of HTML text, as one HTML block for `st.html`."""
    return (f'<div style="display:flex;gap:1.25rem;align-items:flex-start;margin-bottom:0.5rem">'
            f'{_pixel_figure(image, caption, f"{px}px", align="left")}'
            f'<div style="line-height:1.6">{"<br>".join(lines)}</div></div>')


def digit_image(image: Any, scale: int = 4) -> np.ndarray:
    """A 28×28 image (uint8 or float in [0, 1], numpy or torch) enlarged with square pixels for display."""
    arr = np.asarray(unit(image.cpu() if hasattr(image, "cpu") else image))
    return np.kron(arr, np.ones((scale, scale), dtype=np.float32)).clip(0, 1)


def signed_image(delta: np.ndarray, scale: int = 4) -> np.ndarray:
    """A signed 28×28 map as an RGB picture: red where pixels went up, blue where they went down, white = 0."""
    bound = float(np.abs(delta).max()) or 1.0
    t = np.kron(np.asarray(delta, np.float32) / bound, np.ones((scale, scale), np.float32))
    up, down = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    return np.stack([1 - down, 1 - up - down, 1 - up], axis=-1).clip(0, 1)


def robustness_figure(curves: dict[str, Any]) -> go.Figure:
    """Accuracy against the attack's ε, one line per model (`curves`: name -> RobustnessCurve)."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        fig.add_scatter(x=list(curve.eps), y=list(curve.accuracy), mode="lines+markers", name=chart_text(name),
                        line=dict(color=PALETTE[i % len(PALETTE)]),
                        hovertemplate="ε %{x}<br>accuracy %{y:.1%}<extra></extra>")
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    first = next(iter(curves.values()), None)
    attack = f"{first.attack.upper()}{f' ({first.steps} steps)' if first and first.attack == 'pgd' else ''}" if first else ""
    return layout(fig, f"Accuracy under {attack} attack", "ε (largest change of any pixel, 0..1)", "accuracy", height=360)


def privacy_figure(points: Sequence[dict[str, Any]], baseline: dict[str, Any] | None) -> go.Figure:
    """Test accuracy against the privacy budget ε of private runs, beside the best non-private run."""
    fig = go.Figure()
    fig.add_scatter(x=[p["epsilon"] for p in points], y=[p["accuracy"] for p in points], mode="markers+text",
                    text=[chart_text(p["name"]) for p in points], textposition="top center", name="private runs",
                    marker=dict(size=11, color=PALETTE[0]), hovertemplate="%{text}<br>ε %{x:.2f}<br>%{y:.2%}<extra></extra>")
    if baseline is not None:
        fig.add_hline(y=baseline["accuracy"], line_dash="dash", line_color=PALETTE[1],
                      annotation_text=f"not private: {chart_text(baseline['name'])} {baseline['accuracy']:.2%}")
    fig.update_yaxes(tickformat=".1%")
    fig.update_xaxes(rangemode="tozero")
    return layout(fig, "What privacy costs: accuracy against ε", "ε (lower = more private)", "test accuracy", height=360)


def clean_vs_robust_figure(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Clean test accuracy against accuracy under PGD attack; marker size grows with training time."""
    seconds = np.asarray([r["seconds"] for r in rows], dtype=float)
    sizes = 10 + 30 * np.sqrt(seconds / max(seconds.max(), 1e-9))
    fig = go.Figure(go.Scatter(
        x=[r["robust"] for r in rows], y=[r["clean"] for r in rows], mode="markers+text",
        text=[chart_text(r["name"]) for r in rows],
        textposition="top center", marker=dict(size=sizes, color=PALETTE[0]), customdata=[[r["eps"], r["seconds"]] for r in rows],
        hovertemplate="%{text}<br>robust %{x:.1%} (PGD ε %{customdata[0]})<br>clean %{y:.2%}<br>"
                      "%{customdata[1]:.0f} s training<extra></extra>"))
    fig.update_xaxes(tickformat=".0%")
    fig.update_yaxes(tickformat=".1%")
    return layout(fig, "Clean against robust accuracy (bigger = longer training)", "accuracy under PGD attack",
                  "clean test accuracy", height=340)


def is_open(container: Any) -> bool:
    """Whether a lazy tab or popover (`on_change="rerun"`) is open, so its content should be drawn. Its `.open` is
    None when Streamlit does not track it (AppTest without a key): then it is drawn too."""
    return container.open is not False


def plain(text: str) -> str:
    """`text` (a run name, anything a visitor typed) as markdown that shows it as written: no link, image, bold,
    colour, icon or formula from a name ever reaches another viewer's page."""
    return escape_markdown(text)


def article(label: str) -> str:
    """'a' or 'an' before a class name read aloud: an 8, an Ankle boot, a 7."""
    return "an" if label[:1].lower() in set("8aeiou") else "a"


def image_row(images: Sequence[np.ndarray], captions: Sequence[str], width: int = 72) -> None:
    """A row of small digit images with captions."""
    st.image([digit_image(im) for im in images], caption=list(captions), width=width, clamp=True)


def error_box(error: Exception) -> None:
    """A user-caused error as a sentence, never a traceback."""
    st.error(str(error), icon=":material/error:")


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], normalized: bool) -> go.Figure:
    """Confusion matrix heatmap: rows true class, columns predicted."""
    text = [[f"{v:.1%}" if normalized else f"{int(v)}" for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(z=matrix, x=list(classes), y=list(classes), colorscale="Blues", text=text,
                               texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    # Heatmaps report no selection in Streamlit (streamlit#8760): invisible markers on the cells take the clicks.
    n = len(classes)
    fig.add_scatter(x=[classes[p] for t in range(n) for p in range(n)], y=[classes[t] for t in range(n) for p in range(n)],
                    customdata=[[t, p] for t in range(n) for p in range(n)], mode="markers",
                    text=[text[t][p] for t in range(n) for p in range(n)],
                    hovertemplate="true %{y}, predicted %{x}: %{text} — click to see the images<extra></extra>",
                    marker=dict(symbol="square", size=34, color="rgba(0,0,0,0)"), showlegend=False)
    fig.update_layout(clickmode="event+select", hovermode="closest")
    fig.update_yaxes(range=[n - 0.5, -0.5], type="category")  # fixed ranges: markers must not pad the axes
    fig.update_xaxes(range=[-0.5, n - 0.5], type="category")
    return layout(fig, "Confusion matrix — click a cell to see its images" + (" (row-normalised)" if normalized else ""),
                  "predicted", "true", height=460)


def selected_cell(event: Any) -> tuple[int, int] | None:
    """(true class, predicted class) of the confusion-matrix cell clicked in a plotly selection event."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    for point in points:
        data = point.get("customdata")
        if data is not None and len(data) == 2:
            return int(data[0]), int(data[1])
    return None


def reliability_figure(confidence: np.ndarray, accuracy: np.ndarray, count: np.ndarray, ece: float) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration."""
    keep = count > 0
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated", line=dict(dash="dash", color="#94a3b8"))
    fig.add_scatter(x=confidence[keep], y=accuracy[keep], mode="lines+markers", name="model",
                    marker=dict(size=np.clip(np.sqrt(count[keep]), 5, 30), color=PALETTE[0]),
                    hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2%}<extra></extra>")
    return layout(fig, f"Reliability diagram (ECE {ece:.2%})", "mean confidence in bin", "accuracy in bin", height=360)


def reject_figure(rows: Sequence[dict[str, float]], threshold: float) -> go.Figure:
    """Coverage and accuracy of the answered images as the confidence threshold rises."""
    fig = go.Figure()
    t = [r["threshold"] for r in rows]
    fig.add_scatter(x=t, y=[r["accuracy"] for r in rows], mode="lines", name="accuracy of answered", line=dict(color=PALETTE[2]))
    fig.add_scatter(x=t, y=[r["coverage"] for r in rows], mode="lines", name="share answered", line=dict(color=PALETTE[3]))
    fig.add_vline(x=threshold, line_dash="dot", line_color="#64748b")
    fig.update_yaxes(tickformat=".1%")
    return layout(fig, "Reject option: answer only when confident", "confidence threshold", "share", height=360)


def f1_difference_figure(diff: Sequence[float], classes: Sequence[str], name_a: str, name_b: str) -> go.Figure:
    colors = [PALETTE[2] if d >= 0 else PALETTE[1] for d in diff]
    fig = go.Figure(go.Bar(x=list(classes), y=list(diff), marker_color=colors, text=[f"{d:+.3f}" for d in diff],
                           textposition="outside"))
    fig.update_xaxes(type="category")
    return layout(fig, f"F1 of {name_b} minus F1 of {name_a}, per class", "class", "F1 difference", height=320)

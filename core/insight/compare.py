"""Comparing runs: config differences, the cost-benefit Pareto front, and model cards.

`pareto_front(costs, gains)` marks runs no other run beats on both; `config_diff(records)` keeps the
settings that differ; `model_card(record, metrics)` writes the markdown card shipped with weights.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Sequence

from core.data.datasets import DATASETS
from core.models.zoo import ZOO
from core.runs import RunRecord


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=^&])")


def escape_markdown(text: str) -> str:
    """`text` backslash-escaped so markdown (Streamlit's included) shows it literally, on one line."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text)).replace("\n", " ")


def pareto_front(costs: Sequence[float], gains: Sequence[float]) -> list[bool]:
    """True where no other point has cost <= and gain >= with one of them strictly better."""
    flags = []
    for i, (c, g) in enumerate(zip(costs, gains)):
        dominated = any((c2 <= c and g2 >= g) and (c2 < c or g2 > g)
                        for j, (c2, g2) in enumerate(zip(costs, gains)) if j != i)
        flags.append(not dominated)
    return flags


def config_diff(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Setting -> value per run, only for settings that are not the same in every run."""
    keys = sorted({k for r in records for k in r.config if k != "extra"})
    table = {k: [r.config.get(k) for r in records] for k in keys}
    return {k: v for k, v in table.items() if len({repr(x) for x in v}) > 1}


def cost_benefit_rows(records: Sequence[RunRecord], include_unfinished: bool = False) -> list[dict[str, Any]]:
    """One row per completed run with a test result: accuracy against time, parameters, FLOPs and data.

    A run stopped after a few steps is cheap and bad, so it would distort every "worth it?" verdict:
    cancelled and failed runs join only with `include_unfinished`.
    """
    rows = []
    for r in records:
        acc = r.metrics.get("test_accuracy")
        secs = r.timings.get("train_seconds")
        if acc is None or not secs or (r.status != "completed" and not include_unfinished):
            continue
        rows.append({"id": r.id, "name": r.name, "model": r.model, "dataset": r.dataset,
                     "test_accuracy": acc, "train_seconds": secs, "params": r.params, "flops": r.flops,
                     "train_images": r.dataset_sizes.get("train", 0)})
    for cost in ("train_seconds", "params", "flops", "train_images"):
        flags = pareto_front([row[cost] for row in rows], [row["test_accuracy"] for row in rows])
        for row, flag in zip(rows, flags):
            row[f"pareto_{cost}"] = flag
    return rows


def versus_cheapest(rows: Sequence[dict[str, Any]], cost: str) -> dict[str, Any] | None:
    """The most accurate run against the cheapest by `cost`: points gained, share of errors removed, cost ratio.

    None when the cheapest run is also the most accurate (the bigger model is not worth it on these runs).
    """
    base = min(rows, key=lambda r: r[cost])
    best = max(rows, key=lambda r: r["test_accuracy"])
    if best["id"] == base["id"]:
        return None
    return {"best": best, "base": base, "points": (best["test_accuracy"] - base["test_accuracy"]) * 100,
            "errors_cut": 1 - (1 - best["test_accuracy"]) / max(1 - base["test_accuracy"], 1e-9),
            "cost_ratio": best[cost] / max(base[cost], 1e-9)}


def model_card(record: RunRecord, metrics: Sequence[dict[str, Any]] = (),
               weights_name: str = "weights.safetensors") -> str:
    """A markdown model card: what it is, how it was trained, how well it does, what it is for."""
    spec = ZOO.get(record.model)
    info = DATASETS.get(record.dataset)
    created = dt.datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M")
    lines = [
        f"# Model card: {escape_markdown(record.name)}", "",
        f"- Run: `{record.id}` ({record.status}), created {created}",
        f"- Model: `{record.model}` — {spec.description if spec else 'unknown'}",
        f"- Parameters: {record.params:,}; forward cost {record.flops / 1e6:.2f} MFLOPs per image",
        f"- Data: {info.title if info else record.dataset}; images used: "
        + ", ".join(f"{k} {v:,}" for k, v in record.dataset_sizes.items()),
        f"- Weights: `{weights_name}`, sha256 `{record.weights_sha256}`",
        "- Software: " + ", ".join(f"{k} {v}" for k, v in record.versions.items()), "",
        "## Results", "",
    ]
    for key, value in sorted(record.metrics.items()):
        lines.append(f"- {key.replace('_', ' ')}: {value:.2%}" if "accuracy" in key else f"- {key.replace('_', ' ')}: {value:.4f}")
    if record.timings:
        precision = f" in {record.timings['precision']}" if record.timings.get("precision") else ""
        lines.append(f"- training time: {record.timings.get('train_seconds', 0):.1f} s on {record.timings.get('device', '?')}"
                     f"{precision} ({record.timings.get('images_per_second', 0):.0f} images/s)")
    if metrics:
        lines += ["", "| epoch | train loss | val loss | val accuracy |", "|---|---|---|---|"]
        lines += [f"| {m['epoch']} | {m['train_loss']:.4f} | {m['val_loss']:.4f} | {m['val_accuracy']:.2%} |"
                  for m in metrics]
    lines += ["", "## Training settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(record.config.items()) if k != "extra"]
    lines += ["", "## Intended use", "",
              "Reading single handwritten digits (0–9) as 28×28 greyscale images, for teaching and demos. "
              "Not for documents, multi-digit numbers, or any decision about a person. Accuracy on drawings "
              "and photos is lower than on the test set: use a confidence threshold and let people retry.", ""]
    return "\n".join(lines)

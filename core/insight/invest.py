"""Is a bigger, pre-trained model worth it? The arithmetic behind the Invest page, from stored results only.

`summarise(points)` turns a transfer experiment's points into mean and spread per (strategy, k);
`verdict(summary, pretrain, k)` says in words what pre-training bought at k labels per class, with every number
it used; `break_even_tasks(P, T, S)` is the number of downstream tasks after which pre-training once (P) and
adapting per task (T) costs less compute than training from scratch per task (S); `fit_power_law(x, acc)` fits
test error = a·x^b across runs, so "bigger" has a measured slope.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from core.runs import RunRecord
from core.training.transfer import energy_wh, run_cost

ALL = 0  # k = 0 means every labelled image (as core.training.transfer.ALL)
TRANSFER_STRATEGIES = ("finetune", "probe")
TITLES = {"probe": "linear probe", "finetune": "fine-tuned", "scratch": "from scratch"}


def k_order(k: int) -> float:
    """Sort key: k = ALL (every label) comes after every number."""
    return math.inf if k == ALL else k


def k_text(k: int) -> str:
    return "all" if k == ALL else f"{k:,}"


def human_flops(flops: float) -> str:
    """1.2e12 -> '1.2 TFLOP'."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def summarise(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, spread (sample standard deviation, min, max) and mean cost per (strategy, k), over finished seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in points:
        if p.get("test_accuracy") is not None:
            groups.setdefault((p["strategy"], p["k"]), []).append(p)
    rows = []
    for (strategy, k), group in sorted(groups.items(), key=lambda item: (item[0][0], k_order(item[0][1]))):
        accs = [p["test_accuracy"] for p in group]
        rows.append({"strategy": strategy, "k": k, "n": len(group), "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "low": min(accs), "high": max(accs),
                     "train_seconds": statistics.fmean(p["train_seconds"] for p in group),
                     "flops": statistics.fmean(p["flops"] for p in group),
                     "labels": group[0].get("labels")})
    return rows


def row_at(summary: Sequence[dict[str, Any]], strategy: str, k: int) -> dict[str, Any] | None:
    return next((r for r in summary if r["strategy"] == strategy and r["k"] == k), None)


def cheapest_reaching(summary: Sequence[dict[str, Any]], strategy: str, accuracy: float,
                      cost: str = "flops") -> dict[str, Any] | None:
    """The cheapest of `strategy`'s points whose mean accuracy is at least `accuracy` (None when none is)."""
    reaching = [r for r in summary if r["strategy"] == strategy and r["mean"] >= accuracy]
    return min(reaching, key=lambda r: (r[cost], k_order(r["k"]))) if reaching else None


def break_even_tasks(pretrain_cost: float, adapt_cost: float, scratch_cost: float) -> float | None:
    """Tasks N after which P + N·T < N·S: N = P / (S − T). None when adapting costs as much as scratch or more
    (then pre-training never pays back in compute)."""
    if scratch_cost <= adapt_cost:
        return None
    return pretrain_cost / (scratch_cost - adapt_cost)


def amortised(cost: float, pretrain_cost: float, tasks: int) -> float:
    """A transfer point's cost per task when pre-training is shared by `tasks` downstream tasks."""
    return cost + pretrain_cost / max(tasks, 1)


@dataclass
class Verdict:
    text: str  # plain language, built from `numbers` only
    numbers: dict[str, Any] = field(default_factory=dict)  # every figure the text uses, for "show the numbers"

    def rows(self) -> list[tuple[str, str]]:
        """`numbers` as (figure, value) rows a person reads: accuracies in percent, FLOPs in scientific notation,
        seconds and watt-hours with units (not 0.2915000021457672)."""
        return [(name, number_text(name, value)) for name, value in self.numbers.items()]


def number_text(name: str, value: Any) -> str:
    """One of a verdict's figures, written for reading; `name` says what it is."""
    if value is None or isinstance(value, (str, bool)):
        return "–" if value is None else str(value)
    if name == "k":
        return k_text(value)
    if name.endswith("_accuracy"):
        return f"{value:.2%}"
    if name == "seed_spread_points":
        return f"±{value:.2f} points"
    if name.endswith("_points") or name == "points_gained":
        return f"{value:+.2f} points"
    if name.endswith("_flops"):
        return f"{value:.3e}"
    if name.endswith("_seconds"):
        return f"{value:.1f} s"
    if name.endswith("_wh"):
        return f"{value:.3f} Wh"
    if name == "watts":
        return f"{value:g} W"
    if name.endswith("_k"):
        return k_text(value)
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"


def verdict(summary: Sequence[dict[str, Any]], pretrain: dict[str, Any], k: int, *, watts: float = 35.0) -> Verdict:
    """What pre-training bought at `k` labels per class, against training from scratch, in words and numbers."""
    scratch = row_at(summary, "scratch", k)
    adapted = [r for s in TRANSFER_STRATEGIES if (r := row_at(summary, s, k)) is not None]
    if scratch is None or not adapted or pretrain.get("flops") is None:
        where = "every label" if k == ALL else f"{k_text(k)} label{'s' if k > 1 else ''} per class"
        return Verdict(f"Not enough finished points at {where} yet: the verdict needs the "
                       "pre-trained backbone, one transfer strategy and the from-scratch run there.", {"k": k})
    best = max(adapted, key=lambda r: r["mean"])
    p_flops, p_secs = pretrain["flops"], pretrain["train_seconds"]
    n = {"k": k, "strategy": best["strategy"], "transfer_accuracy": best["mean"], "transfer_seeds": best["n"],
         "scratch_accuracy": scratch["mean"], "scratch_seeds": scratch["n"],
         "points_gained": (best["mean"] - scratch["mean"]) * 100, "transfer_flops": best["flops"],
         "transfer_seconds": best["train_seconds"], "scratch_flops": scratch["flops"],
         "scratch_seconds": scratch["train_seconds"], "pretrain_run": pretrain["run_id"], "pretrain_flops": p_flops,
         "pretrain_seconds": p_secs, "pretrain_energy_wh": energy_wh(p_secs, watts), "watts": watts}
    labels = "every label" if k == ALL else f"{k_text(k)} label{'s' if k > 1 else ''} per class"
    sign = "+" if n["points_gained"] >= 0 else "−"
    text = (f"With {labels}, the pre-trained model ({TITLES[best['strategy']]}) reaches {best['mean']:.1%} "
            f"against {scratch['mean']:.1%} from scratch ({sign}{abs(n['points_gained']):.1f} points, mean of "
            f"{min(best['n'], scratch['n'])} seed{'s' if min(best['n'], scratch['n']) > 1 else ''}). "
            f"Pre-training cost {p_secs:.0f} s of training ({human_flops(p_flops)}, about "
            f"{n['pretrain_energy_wh']:.2f} Wh at {watts:g} W)")
    spread = seed_spread(best, scratch)
    if spread is not None and abs(n["points_gained"]) <= spread:  # either way, a difference the seeds alone make
        n.update(break_even_tasks=None, seed_spread_points=spread)
        what = "gain" if n["points_gained"] > 0 else "difference"
        return Verdict(text + f". The {what} is within the spread between seeds (±{spread:.1f} points), so it bought "
                       "nothing measurable here and never pays back.", n)
    if n["points_gained"] <= 0:
        n["break_even_tasks"] = None
        lead = abs(n["points_gained"])
        better = f"does better by {lead:.1f} points" if round(lead, 1) > 0 else "is as good"
        return Verdict(text + f" and bought nothing here: training from scratch {better}, so it never pays back.", n)
    match = cheapest_reaching(summary, "scratch", best["mean"])
    if match is None:
        n["break_even_tasks"] = None
        n["scratch_match_k"] = None
        return Verdict(text + ". From scratch, no amount of labels tried reaches that accuracy: here pre-training "
                       "buys accuracy that training from scratch does not, and pays back from the first task.", n)
    n.update(scratch_match_k=match["k"], scratch_match_accuracy=match["mean"], scratch_match_flops=match["flops"],
             scratch_match_seconds=match["train_seconds"])
    tasks = break_even_tasks(p_flops, best["flops"], match["flops"])
    n["break_even_tasks"] = tasks
    need = (f"{k_text(match['k'])} label{'s' if match['k'] > 1 else ''} per class" if match["k"] != ALL
            else "every label")
    if tasks is None:
        return Verdict(text + f". To match it from scratch takes {need} but no more compute "
                       f"({human_flops(match['flops'])} against {human_flops(best['flops'])}): pre-training never "
                       "pays back its compute, only its labels.", n)
    return Verdict(text + f". To match it from scratch takes {need} and {human_flops(match['flops'])} per task "
                   f"against {human_flops(best['flops'])} to adapt, so pre-training pays back its compute after "
                   f"{math.ceil(tasks):,} task{'s' if math.ceil(tasks) > 1 else ''}.", n)


def seed_spread(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The larger of two points' seed-to-seed standard deviations, in points; None unless both have 2+ seeds
    (one seed says nothing about the spread)."""
    if min(a["n"], b["n"]) < 2:
        return None
    return max(a["std"], b["std"]) * 100


# -- the scaling view ------------------------------------------------------------------------------
@dataclass
class PowerLaw:
    """test error ≈ a · x^b over `n` runs (fitted in log-log), with R² in log space."""

    a: float
    b: float
    r2: float
    n: int
    x_name: str

    def error_at(self, x: float) -> float:
        return self.a * x ** self.b

    @property
    def equation(self) -> str:
        return f"test error ≈ {self.a:.3g} × {self.x_name}^{self.b:.3f}"

    @property
    def per_tenfold(self) -> str:
        """The slope in words: what 10× more of x does to the error."""
        factor = 10 ** self.b
        return (f"each 10× more {self.x_name} multiplies the test error by {factor:.2f} "
                f"({'−' if factor < 1 else '+'}{abs(1 - factor):.0%}; R² {self.r2:.2f} over {self.n} runs)")


def fit_power_law(xs: Sequence[float], accuracies: Sequence[float], x_name: str = "x") -> PowerLaw | None:
    """Least squares of log10(1 − accuracy) on log10(x); None with fewer than 3 distinct sizes x: a line through two
    sizes fits them exactly, so its R² of 1.00 would claim a trend the runs cannot show."""
    import numpy as np

    pairs = [(x, 1 - a) for x, a in zip(xs, accuracies) if x and x > 0 and 0 < 1 - a < 1]
    if len({x for x, _ in pairs}) < 3:
        return None
    lx = np.log10([x for x, _ in pairs])
    ly = np.log10([e for _, e in pairs])
    b, log_a = np.polyfit(lx, ly, 1)
    predicted = log_a + b * lx
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1 - float(((ly - predicted) ** 2).sum()) / total if total > 0 else 1.0
    return PowerLaw(float(10 ** log_a), float(b), r2, len(pairs), x_name)


KINDS = {"none": "trained from scratch", "scratch": "trained from scratch", "probe": "linear probe",
         "finetune": "fine-tuned"}  # a scaling point's legend, by how it trained


def held_back(config: dict[str, Any]) -> str:
    """Why a run's accuracy says little about its size, in a few words ("" when nothing but its size sets it): trained
    on a subset of the labels, from another model's weights, with differential privacy, or on attacked images. (A run cut short by a step limit
    stays: its FLOPs count the images it trained on, so it is a smaller point, not an odd one.)"""
    if config.get("per_class") or config.get("train_size"):
        return "few labels"
    if config.get("init_from"):  # its FLOPs count the fine-tuning alone, not what its starting model cost
        return "started from another model"
    if config.get("dp"):
        return "private (DP-SGD)"
    if config.get("adversarial", "none") != "none":
        return "adversarially trained"
    return ""


def scaling_rows(records: Sequence[RunRecord], dataset: str, *, comparable_only: bool = True) -> list[dict[str, Any]]:
    """Completed runs on `dataset` with their accuracy, parameters and training FLOPs; `aside` says why a run's
    accuracy says little about its size (`held_back`), and such runs come only on request. `kind`: how it trained."""
    rows = []
    for r in records:
        if r.status != "completed" or r.dataset != dataset or r.test_accuracy is None:
            continue
        aside = held_back(r.config)
        if comparable_only and aside:
            continue
        cost = run_cost(r)
        if not cost["flops"]:
            continue
        transfer = r.config.get("extra", {}).get("transfer") or r.config.get("transfer", "none")
        rows.append({"id": r.id, "name": r.name, "model": r.model, "test_accuracy": r.test_accuracy,
                     "params": r.params, "flops": cost["flops"], "train_seconds": cost["train_seconds"],
                     "kind": aside or KINDS.get(transfer, transfer), "aside": aside})
    return rows

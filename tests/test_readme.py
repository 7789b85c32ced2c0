"""The README's figures are the stored results, and every script it names exists."""
from __future__ import annotations

import json
import re

import pytest

from core.training.config import PRESETS
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
RESULTS = json.loads((REPO / "benchmarks" / "results" / "presets.json").read_text())


def _preset_rows() -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        match = re.match(r"\| `([\w-]+)` \|", line)
        if match and match.group(1) in PRESETS:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


@pytest.mark.parametrize("preset", [p for p in RESULTS if p in PRESETS])
def test_readme_preset_row_matches_the_stored_benchmark(preset):
    row = _preset_rows()[preset]
    stored = RESULTS[preset]
    accuracy = float(re.search(r"\*\*([\d.]+)%\*\*", row[2]).group(1)) / 100
    assert accuracy == pytest.approx(stored["test_accuracy"], abs=5e-5)
    minutes = float(re.search(r"([\d.]+) min", row[3]).group(1))
    assert minutes == pytest.approx(stored["train_seconds"] / 60, abs=0.051)
    assert stored["test_accuracy"] >= PRESETS[preset]["floor"]


def test_every_script_the_docs_and_tests_name_exists():
    texts = [README] + [p.read_text() for p in (REPO / "tests").rglob("*.py")]
    named = {m for text in texts for m in re.findall(r"\b((?:benchmarks|scripts)/[\w/]+\.py)\b", text)}
    assert named and all((REPO / path).is_file() for path in named), sorted(p for p in named if not (REPO / p).is_file())


def test_readme_transfer_tables_match_the_stored_experiments():
    stored = json.loads((REPO / "benchmarks" / "results" / "transfer.json").read_text())["experiments"]
    for exp in stored:
        source, target = exp["spec"]["source"], exp["spec"]["target"]
        title = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
        header = f"| {title[source]} → {title[target]}, labels per class |"
        lines = README.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
        rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines}
        for point in exp["summary"]:
            k = "all" if point["k"] == 0 else str(point["k"])
            cell = rows[k][("probe", "finetune", "scratch").index(point["strategy"])]
            assert cell.startswith(f"{point['mean']:.1%}"), (source, k, point["strategy"], cell)
        assert len(rows) == len({p["k"] for p in exp["summary"]})


def test_readme_first_visit_table_matches_the_stored_benchmark():
    stored = json.loads((REPO / "benchmarks" / "results" / "pages.json").read_text())
    header = "| page | first visit (address → drawn) | complete | server's first run | server RSS after |"
    lines = README.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]] for line in lines}
    assert list(rows) == [r["page"] for r in stored["pages"]]
    for r in stored["pages"]:
        assert rows[r["page"]] == [f"{r['seconds']:.1f} s", f"{r['complete_seconds']:.1f} s",
                                   f"{r['server_seconds']:.1f} s", f"{r['rss_mb']:,.0f} MB"]
    for p in stored["presets"]:
        assert f"{p['preset']} {p['peak_rss_mb']:,.0f} MB" in README


def test_readme_gpu_table_matches_the_stored_gpu_check():
    stored = json.loads((REPO / "benchmarks" / "results" / "gpu_check.json").read_text())
    before = json.loads((REPO / "benchmarks" / "results" / "gpu_check-no-graphs.json").read_text())
    table = README.split("| on the H200 | core | reference, same run | ratio |", 1)[1].split("\n\n", 1)[0]
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in table.splitlines()[2:]}
    ttn, throughput, runs = stored["time_to_99"], stored["throughput"], stored["runs"]
    assert all(r["cuda_graph"] and r["data_on"] == "cuda:0" for r in [*ttn["fast"], throughput["seed_cnn"]])
    accuracies = " / ".join(f"{r['test_accuracy']:.2%}".rstrip("%") for r in ttn["fast"])
    assert f"**{ttn['fast_median_seconds']:.3f} s** ({accuracies}%)" in rows["time"]
    assert f"{ttn['recipe_median_seconds']:.3f} s" in rows["time"] and f"**{ttn['ratio']:.2f}×**" in rows["time"]
    assert ttn["target_met"] and ttn["all_fast_seeds_reach_99"]
    assert f"**{throughput['seed_cnn']['images_per_second']:,.0f} img/s**" in rows["`seed-cnn`"]
    assert f"{throughput['plain_loop']['images_per_second']:,.0f} img/s" in rows["`seed-cnn`"]
    assert f"**{throughput['ratio']:.1f}×**" in rows["`seed-cnn`"]
    for preset in ("fast", "best"):
        cpu = runs[f"{preset}/cpu-reference"]["images_per_second"]
        assert f"{cpu:,.0f} img/s" in rows[f"`{preset}`,"]
        ratios = " / ".join(f"{runs[f'{preset}/cuda-{p}']['images_per_second'] / cpu:.1f}×" for p in ("fp32", "bf16"))
        assert ratios in rows[f"`{preset}`,"]
        for precision in ("fp32", "bf16"):
            run = runs[f"{preset}/cuda-{precision}"]
            seconds = f"{run['train_seconds']:.3f}" if preset == "fast" else f"{run['train_seconds']:.1f}"
            assert f"{precision} {'**' if preset == 'best' and precision == 'bf16' else ''}{seconds} s " \
                   f"({run['test_accuracy']:.2%})" in rows[f"`{preset}`,"]
    old = before["time_to_99"]
    assert (f"`fast` {old['fast_median_seconds']:.3f} s against\n{old['recipe_median_seconds']:.3f} s "
            f"({old['ratio']:.2f}×, target missed)") in README


def test_readme_drawn_digits_column_is_the_shipped_starters_card():
    # The Drawn digits table's last column is the shipped starter's; the figures its card records must be the ones shown
    card = json.loads((REPO / "core" / "assets" / "starter.json").read_text())
    fonts = card["held_out_fonts"]
    measured = {
        "| MNIST test set, 10,000 images |": (card["metrics"]["test_accuracy"], 2),
        "| 1,000 template drawings ": (card["drawings"]["accuracy"], 1),
        "| the first 1,000 MNIST test digits thinned and re-stroked ": (card["handwriting"]["accuracy"], 1),
        "| the same digits first coarsened to 8×8, then re-stroked |": (card["coarse_handwriting"]["accuracy"], 1),
        "| scikit-learn's 1,797 digits (UCI, 43 other writers) thinned ": (card["outside_handwriting"]["accuracy"], 1),
        f"| digits typed in the {fonts['faces']} installed font faces ({len(fonts['families'])} families) kept out ":
            (fonts["typed"]["accuracy"], 1),
        "| the same, each re-stroked 5 times ": (fonts["restroked"]["accuracy"], 1),
    }
    table = README.split("**Drawn digits**", 1)[1].split("\n\n", 2)[1].splitlines()
    for start, (accuracy, places) in measured.items():
        row = next((line for line in table if line.startswith(start)), None)
        assert row is not None, start
        assert row.rstrip(" |").rsplit("|", 1)[1].strip().startswith(f"**{accuracy:.{places}%}**"), (start, row)

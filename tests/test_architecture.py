"""House rules checked from the code: the engine never imports streamlit; its rooms depend one way."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import core

CORE = Path(core.__file__).parent


def test_core_never_imports_streamlit():
    modules = [m.name for m in pkgutil.walk_packages([str(CORE)], prefix="core.")
               if not m.name.endswith(".__main__")]  # `python -m core.cli`: importing it runs the command line
    assert len(modules) >= 25
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'streamlit', 'streamlit_drawable_canvas'})\n"
            "assert not bad, bad\n")
    _runs_cleanly(code)
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path


def test_inference_stands_in_its_own_room():
    """Reading a digit needs neither training nor insight code, nor the explanation libraries."""
    code = ("import sys, core.inference.predict, core.inference.weights, core.inference.evaluation, "
            "core.inference.drawing_scores\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('core.training', 'core.insight'))\n"
            "             or m.split('.')[0] in {'shap', 'lime', 'captum'})\n"
            "assert not bad, bad\n")
    _runs_cleanly(code)


def test_data_and_models_stand_on_nothing_above_them():
    code = ("import sys, core.data.datasets, core.data.preprocess, core.data.drawings, core.data.restroke, "
            "core.data.glyphs, "
            "core.data.drawing_sets, core.data.drawing_parts, core.data.drawing_files, core.models.zoo\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('core.training', 'core.inference', 'core.insight')))\n"
            "assert not bad, bad\n")
    _runs_cleanly(code)


def _runs_cleanly(code: str) -> None:
    """Run `code` in a fresh interpreter (so earlier imports cannot hide a dependency) and expect success."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

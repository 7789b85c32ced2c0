"""House rules checked from the code: the engine never imports streamlit."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import core

CORE = Path(core.__file__).parent


def test_core_never_imports_streamlit():
    modules = [f"core.{m.name}" for m in pkgutil.iter_modules([str(CORE)])]
    assert len(modules) >= 8
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'streamlit', 'streamlit_drawable_canvas'})\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path


def test_inference_stands_in_its_own_room():
    """Reading a digit needs neither the training loop nor the explanation libraries."""
    code = ("import sys, core.predict, core.weights, core.evaluation\n"
            "bad = sorted(m for m in sys.modules if m in {'core.train', 'core.checkpoint', 'core.jobs', "
            "'core.experiment', 'core.explain', 'core.trust', 'core.config'} or m.split('.')[0] in {'shap', 'lime', 'captum'})\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

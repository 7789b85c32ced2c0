"""Digit Lab's engine: data, model zoo, training, run store, prediction and explanations.

Import what you need from the submodules (`core.train`, `core.runs`, ...); this package never
imports streamlit, so it serves the CLI, the tests and the dashboard alike.
"""
__version__ = "0.1.0"

"""Digit Lab's engine, grouped by what each part is for; data flows one way, top to bottom:

- `core.data`, `core.models`: datasets, preprocessing, synthetic drawings; the model zoo.
- `core.inference`: model sources and weights, predictions, evaluations (needs nothing of training).
- `core.training`: config and presets, the loop, checkpoints, runs from start to finish, background jobs.
- `core.insight`: comparisons, explanations and how far to trust them, layer activations.
- shared: `core.errors` (sentences for people), `core.storage` (atomic, checked files), `core.runs` (the run
  store), `core.cli` (the `digit-lab` command).

This package never imports streamlit, so it serves the CLI, the tests and the dashboard alike.
"""
__version__ = "0.1.0"

"""Run stores with finished runs for the page tests (a few seconds of training on the built-in digits)."""
from __future__ import annotations

from core.runs import RunStore
from core.training.config import TrainConfig
from core.training.experiment import create_run, execute_run
from tests.dashboard.conftest import assert_clean, goto


def finished_runs(home, n=2):
    """A store with `n` finished runs (seed MLP, seed CNN) on the built-in digits; returns (store, run ids)."""
    store = RunStore(home)
    ids = []
    for i, model in enumerate(["seed-mlp", "seed-cnn"][:n]):
        cfg = TrainConfig(model=model, dataset="digits", epochs=2, limit_batches=5, seed=i)
        ids.append(execute_run(store, create_run(store, cfg, name=f"run {model}").id).id)
    return store, ids


def evaluate_page(app, tmp_path, n=2):
    """Finished runs, the digits dataset and the first run chosen in the sidebar; Evaluate opened."""
    store, ids = finished_runs(tmp_path / "home", n=n)
    open_with_model(app, "evaluate", ids[0])
    assert_clean(app)
    return store, ids


def open_with_model(app, page: str, run_id: str) -> None:
    """Start the app on the built-in digits with `run_id` as the sidebar's model, then open `page`."""
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    app.selectbox(key="app_run").set_value(run_id).run()
    goto(app, page)


def runs_table(store):
    """The key of the Runs page's table as it lists all of `store`'s runs."""
    from dashboard.state import runs_table_key

    return runs_table_key(store.list())

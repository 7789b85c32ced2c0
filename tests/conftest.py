"""Shared fixtures: an isolated run store per test, the data root, small datasets and configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never download: a missing dataset must surface as a message, not a network wait.
os.environ["DIGIT_LAB_OFFLINE"] = "1"
if not os.environ.get("DIGIT_LAB_DATA") and SHARED_DATA.is_dir():
    os.environ["DIGIT_LAB_DATA"] = str(SHARED_DATA)
os.environ.setdefault("DIGIT_LAB_HOME", str(REPO / ".digit-lab" / "test-home"))
# Job managers train in a thread here, so tests can patch the engine; tests/test_jobs.py and the browser tests'
# servers use the training process the dashboard uses by default.
os.environ.setdefault("DIGIT_LAB_WORKER", "thread")
# Pages under AppTest run in this process: keep torch's thread count for the training tests that follow (the
# server's one-thread default is for `streamlit run`; the browser tests' servers use it).
os.environ["DIGIT_LAB_SERVER_THREADS"] = "0"
os.environ["DIGIT_LAB_WARM_UP"] = "0"  # no background evaluation of the starter while tests run (servers too)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh run store under a temp folder, also used by anything reading $DIGIT_LAB_HOME."""
    from core.runs import RunStore

    monkeypatch.setenv("DIGIT_LAB_HOME", str(tmp_path / "home"))
    return RunStore(tmp_path / "home")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as 28×28 splits on the CPU: tiny, always available."""
    from core.data.datasets import load_splits

    return load_splits("digits")


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST; skipped locally when absent, a failure in CI (where ../shared/data is present)."""
    from core.data.datasets import is_available, load_splits

    if not is_available("mnist"):
        if in_ci():
            pytest.fail("MNIST is missing in CI: set DIGIT_LAB_DATA to ../shared/data")
        pytest.skip("MNIST not found under DIGIT_LAB_DATA")
    return load_splits("mnist")


@pytest.fixture
def tiny_cfg():
    """A seconds-long config on the built-in digits."""
    from core.training.config import TrainConfig

    return TrainConfig(model="seed-cnn", dataset="digits", epochs=2, batch_size=32, limit_batches=8, seed=3)


@pytest.fixture(scope="session")
def mnist_sample(mnist):
    """The first 1,000 MNIST test images as floats in [0, 1] (numpy), with labels."""
    return mnist.test_x[:1000].numpy().astype("float32") / 255.0, mnist.test_y[:1000].numpy()

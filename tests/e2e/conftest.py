"""Browser tests: a real `streamlit run` server on a free port, driven by Playwright in Debian's Chromium.

Chromium comes from apt (`/usr/bin/chromium`); Playwright cannot download browsers here. Without it the
tests skip locally, and fail when DIGIT_LAB_REQUIRE_BROWSER=1 (CI sets it) so they never vanish silently.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def load_benchmark():
    """benchmarks/load.py as a module, loaded by path: opacus installs a top-level `benchmarks` package that shadows
    the project's folder."""
    spec = importlib.util.spec_from_file_location("digit_lab_load", REPO / "benchmarks" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module

CHROMIUM = Path(os.environ.get("DIGIT_LAB_CHROMIUM", "/usr/bin/chromium"))
READY = "[data-testid='stApp'][data-test-script-state='notRunning']"
VIEWPORT = {"width": 1366, "height": 768}  # a teacher's laptop in front of a class


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not CHROMIUM.exists():
        if os.environ.get("DIGIT_LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium is required for browser tests but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": VIEWPORT}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app served by `streamlit run` over a fresh run store; yields its base URL."""
    port = _free_port()
    home = tmp_path_factory.mktemp("home")
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env={**os.environ, "DIGIT_LAB_HOME": str(home), "DIGIT_LAB_WORKER": "process",
                       "DIGIT_LAB_SERVER_THREADS": ""},  # the server as shipped (tests/conftest sets 0 for AppTest)
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        load_benchmark().wait_healthy(url, 90, proc)
    except RuntimeError as error:
        proc.kill()
        pytest.fail(f"{error}: {(home / 'server.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def open_page(page, url: str) -> None:
    """Go to `url` and wait until the script has finished its first run without an exception."""
    page.goto(url)
    page.wait_for_selector(READY, timeout=90_000)
    assert page.locator("[data-testid='stException']").count() == 0

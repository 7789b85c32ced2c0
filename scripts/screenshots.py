"""Take the README's screenshots: the Train page mid-run and the cost-benefit comparison.

    python scripts/screenshots.py [--home DIR]     # DIR: a run store with a few finished runs
Starts the app on a free port with Debian's Chromium, like the browser tests, and writes docs/*.png.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
READY = "[data-testid='stApp'][data-test-script-state='notRunning']"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default=os.environ.get("DIGIT_LAB_HOME", str(Path.home() / ".digit-lab")))
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
                               "--server.headless", "true", "--server.fileWatcherType", "none"],
                              cwd=ROOT, env={**os.environ, "DIGIT_LAB_HOME": args.home},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(f"{url}/runs")
            page.wait_for_selector(READY, timeout=90_000)
            page.wait_for_timeout(2000)
            chart = page.locator(".js-plotly-plot").last
            chart.scroll_into_view_if_needed()
            chart.screenshot(path=str(ROOT / "docs" / "compare.png"))
            page.goto(f"{url}/train")
            page.wait_for_selector(READY, timeout=90_000)
            page.get_by_role("button", name=re.compile("Start training")).click()
            page.get_by_text(re.compile(r"running · epoch 2/")).wait_for(timeout=120_000)
            page.wait_for_timeout(6_000)  # into the second epoch: curves, validation accuracy and previews
            page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0)")
            page.wait_for_timeout(1_500)
            page.screenshot(path=str(ROOT / "docs" / "train.png"), clip={"x": 0, "y": 0, "width": 1400, "height": 1150})
            page.get_by_role("button", name=re.compile("Stop")).click()
            page.wait_for_timeout(3000)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    print("wrote docs/train.png and docs/compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

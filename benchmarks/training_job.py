"""The load script's training job (benchmarks/load.py), driven on the Train page as a teacher would: choose a preset,
type the epochs, press Start, read the job's step and images/s, press Stop."""
from __future__ import annotations

import re
import time

from canvas_visitor import READY, SETUP_MS
from load_report import LoadResult

PROGRESS = re.compile(r"(?:queued|running) · epoch \d+/\d+ · step (\d+)/")  # the job's bar: started, or starting
JOB_EPOCHS = 50  # the job outlasts the drawing on any machine: `fast`'s one epoch took 4 s in bf16 on AMX


async def start_training(page, url: str, preset: str) -> None:
    """On the Train page: choose `preset`, set JOB_EPOCHS epochs in the form, and press Start; returns once the job
    shows it is running."""
    await page.goto(f"{url}/train", timeout=SETUP_MS)
    await page.wait_for_selector(READY, timeout=SETUP_MS)
    await choose_preset(page, preset)
    epochs = page.get_by_label("Epochs", exact=True)
    await epochs.fill(str(JOB_EPOCHS), timeout=SETUP_MS)
    await epochs.press("Enter")
    await page.wait_for_timeout(500)
    await page.wait_for_selector(READY, timeout=SETUP_MS)
    await page.get_by_role("button", name=re.compile("Start training")).click(timeout=SETUP_MS)
    await page.get_by_text(PROGRESS).wait_for(timeout=SETUP_MS)  # the dataset loads first
    if not re.search(rf"epoch \d+/{JOB_EPOCHS} ", await page.get_by_text(PROGRESS).inner_text(timeout=SETUP_MS)):
        raise RuntimeError(f"the job did not start with the {JOB_EPOCHS} epochs typed into the form")


async def choose_preset(page, preset: str) -> None:
    from playwright.async_api import expect

    select = page.get_by_role("combobox", name="Preset")  # Streamlit's select box: an input showing the choice
    if await select.input_value(timeout=SETUP_MS) != preset:
        await select.click(timeout=SETUP_MS)
        await page.get_by_role("option", name=preset, exact=True).click(timeout=SETUP_MS)
        await page.wait_for_timeout(500)
        await page.wait_for_selector(READY, timeout=SETUP_MS)
    await expect(select).to_have_value(preset, timeout=SETUP_MS)


async def training_step(page, timeout_ms: float) -> int:
    return int(PROGRESS.search(await page.get_by_text(PROGRESS).inner_text(timeout=timeout_ms)).group(1))


async def stop_training(page, result: LoadResult) -> None:
    """Read the job's step and images/s, press Stop, and wait until the page says it stopped."""
    result.train_step_end = await training_step(page, SETUP_MS)
    value = await page.locator("[data-testid='stMetric']", has_text="Images/s").locator(
        "[data-testid='stMetricValue']").inner_text(timeout=SETUP_MS)
    result.train_images_per_second = float(value.replace(",", "")) if value.strip() not in ("", "–") else None
    await page.get_by_role("button", name=re.compile("^Stop")).click(timeout=SETUP_MS)
    clicked = time.monotonic()
    await page.get_by_text(re.compile("Stopped. Resume continues")).wait_for(timeout=SETUP_MS)
    result.train_stopped = True
    result.train_stop_seconds = time.monotonic() - clicked  # the job stops within a batch, then the page shows it

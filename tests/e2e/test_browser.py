"""Real Chromium: a digit drawn with the mouse is read; a run trained from the Train page streams and stops."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import open_page

CANVAS = "[data-testid=stBidiComponentIsolated] canvas.upper-canvas"


def _stroke(page, box, points, steps=12):
    """Press, move through `points` (fractions of the canvas) and release, like a hand would."""
    x0, y0 = box["x"] + points[0][0] * box["width"], box["y"] + points[0][1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for fx, fy in points[1:]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=steps)
    page.mouse.up()


def test_a_digit_drawn_with_the_mouse_is_read(server, page):
    open_page(page, f"{server}/predict")
    canvas = page.locator(CANVAS)
    expect(canvas).to_be_visible(timeout=30_000)
    box = canvas.bounding_box()
    _stroke(page, box, [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)])  # a 7: the bar, then the stem
    verdict = page.get_by_text(re.compile(r"^It's a|^Not sure"))
    expect(verdict).to_be_visible(timeout=30_000)
    expect(verdict).to_contain_text("7")
    expect(page.get_by_text("What the model sees (28×28)")).to_be_visible()


def test_training_from_the_browser_streams_progress_and_stops(server, page):
    open_page(page, f"{server}/train")
    page.get_by_role("button", name=re.compile("Start training")).click()
    progress = page.get_by_text(re.compile(r"running · epoch \d+/\d+ · step (\d+)/"))
    expect(progress).to_be_visible(timeout=60_000)
    first = int(re.search(r"step (\d+)/", progress.inner_text()).group(1))
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.wait_for_timeout(2500)
    later = int(re.search(r"step (\d+)/", progress.inner_text()).group(1))
    assert later > first  # the fragment keeps polling: the bar moved while we watched
    second_tab = page.context.new_page()  # another session attaches to the same server-wide job
    open_page(second_tab, f"{server}/train")
    expect(second_tab.get_by_text(re.compile(r"running · epoch \d+/\d+ · step"))).to_be_visible(timeout=30_000)
    second_tab.close()
    page.get_by_role("button", name=re.compile("Stop")).click()
    expect(page.get_by_text(re.compile("Stopped. Resume continues"))).to_be_visible(timeout=30_000)
    page.locator("a[data-testid='stSidebarNavLink']", has_text="Runs & compare").click()
    expect(page.get_by_text(re.compile(r"1 run: 1 cancelled"))).to_be_visible(timeout=30_000)


def test_clicking_a_confusion_matrix_cell_shows_its_images(server, page):
    open_page(page, f"{server}/evaluate")
    chart = page.locator("[data-testid='stPlotlyChart']").first
    expect(chart).to_be_visible(timeout=60_000)
    area = chart.locator(".nsewdrag").first.bounding_box()  # the plotting area: a 10×10 grid of cells
    row, col = 9, 4  # true 9, predicted 4
    page.mouse.click(area["x"] + (col + 0.5) * area["width"] / 10, area["y"] + (row + 0.5) * area["height"] / 10)
    expect(page.get_by_text(re.compile(r"test images are 9 and were read as 4"))).to_be_visible(timeout=30_000)

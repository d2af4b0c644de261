"""The dashboard in a real browser: live updates without a reload, a job's preview, a
cancel from the page, and screenshots that show what each page should.

Waits are hang guards (minutes), never a measure of speed.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from PIL import Image as PILImage

from tests.browser.conftest import LiveFarm
from tests.queue.conftest import HANG_GUARD_S, picture

HEADER_RGB = (0x24, 0x24, 0x3A)  # nav background (dashboard.css)
BAR_RGB = (0x4C, 0x6E, 0xF5)  # progress bar fill


def wait(what: Callable[[], Any], message: str, farm: LiveFarm | None = None) -> Any:
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            value = what()
        except Exception:  # an element replaced by a live update meanwhile: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            log = farm.worker.output() if farm else ""
            raise AssertionError(f"{message} (after {HANG_GUARD_S} s)\n{log}")
        time.sleep(0.2)


def screenshot(driver: Any, name: str, tmp_dir: Path) -> PILImage.Image:
    png = driver.get_screenshot_as_png()
    (tmp_dir / f"{name}.png").write_bytes(png)
    keep = os.environ.get("STYLEFARM_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"{name}.png").write_bytes(png)
    return PILImage.open(io.BytesIO(png)).convert("RGB")


def has_colour(image: PILImage.Image, box: tuple[int, int, int, int], rgb: tuple[int, ...],
               tolerance: int = 6) -> bool:
    colours = image.crop(box).getcolors(1 << 24) or []
    return any(all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb, strict=True))
               for _count, pixel in colours)


def element_box(driver: Any, element: Any) -> tuple[int, int, int, int]:
    """An element's box in screenshot pixels."""
    ratio = driver.execute_script("return window.devicePixelRatio") or 1
    rect = element.rect
    return (int(rect["x"] * ratio), int(rect["y"] * ratio),
            int((rect["x"] + rect["width"]) * ratio), int((rect["y"] + rect["height"]) * ratio))


def upload(farm: LiveFarm, data: bytes) -> str:
    reply = requests.post(f"{farm.url}/v1/images", files={"file": ("x.png", data)}, timeout=60)
    assert reply.status_code in (200, 201), reply.text
    return reply.json()["id"]


def test_dashboard_follows_a_batch_live_shows_a_preview_and_cancels_a_queued_job(
        browser: Any, live_farm: LiveFarm, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    farm, driver = live_farm, browser
    driver.get(f"{farm.url}/")
    assert "Batches" in driver.title
    empty = screenshot(driver, "1-empty", tmp_path)
    assert has_colour(empty, (0, 0, empty.width, 30), HEADER_RGB)
    driver.execute_script("window.stillTheSamePage = true")

    contents = [upload(farm, picture(64, 48, n)) for n in (1, 2, 3)]
    style = upload(farm, picture(48, 48, 4))
    batch = requests.post(f"{farm.url}/v1/batches", timeout=60, json={
        "name": "browser batch", "contents": contents, "styles": [style],
        "params": {"size": 64, "min_size": 32, "iterations": [30, 30, 60], "init": "noise"}})
    assert batch.status_code == 202, batch.text
    batch = batch.json()
    jobs = [j["id"] for j in requests.get(f"{farm.url}/v1/jobs?batch={batch['id']}",
                                          timeout=60).json()["items"]]

    card = f'[data-batch="{batch["id"]}"]'
    wait(lambda: driver.find_elements(By.CSS_SELECTOR, card), "the batch's card never appeared")

    def progress() -> float:
        bar = driver.find_element(By.CSS_SELECTOR, f"{card} [role=progressbar]")
        return float(bar.get_attribute("aria-valuenow"))
    first = progress()
    wait(lambda: progress() > first, "the batch's progress never moved on the page", farm)
    assert driver.execute_script("return window.stillTheSamePage") is True  # no reload
    moving = screenshot(driver, "2-batches", tmp_path)
    box = element_box(driver, driver.find_element(By.CSS_SELECTOR, card))
    assert has_colour(moving, box, BAR_RGB), "no progress bar in the batch card"

    # A job's page: its preview appears while it runs (and stays once it has finished).
    driver.get(f"{farm.url}/jobs/{jobs[0]}")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    preview = wait(lambda: [i for i in driver.find_elements(By.CSS_SELECTOR,
                                                            "img.preview, img.result")
                            if driver.execute_script(loaded, i)],
                   "the job's preview never showed", farm)[0]
    job_shot = screenshot(driver, "3-job", tmp_path)
    pixels = job_shot.crop(element_box(driver, preview)).getcolors(1 << 16)
    assert pixels is not None and len(pixels) > 50, "the preview is blank"
    assert driver.find_elements(By.CSS_SELECTOR, "table.attempts")

    driver.get(f"{farm.url}/workers")
    wait(lambda: driver.find_elements(By.CSS_SELECTOR, "tr.worker"), "no worker listed", farm)
    screenshot(driver, "4-workers", tmp_path)

    # With the worker stopped, a new job stays queued: cancel it from its batch's page.
    farm.worker.stop()
    wait(lambda: not driver.find_elements(By.CSS_SELECTOR, "tr.worker"),
         "the stopped worker was still listed after its lease")
    waiting = requests.post(f"{farm.url}/v1/batches", timeout=60, json={
        "name": "waiting", "contents": contents[:2], "styles": [style],
        "params": {"size": 32, "min_size": 32, "iterations": [2]}}).json()
    queued = [j["id"] for j in requests.get(f"{farm.url}/v1/jobs?batch={waiting['id']}",
                                            timeout=60).json()["items"]]
    driver.get(f"{farm.url}/batches/{waiting['id']}")
    target = f'[data-job="{queued[1]}"]'
    grid = screenshot(driver, "5-batch", tmp_path)
    assert len(driver.find_elements(By.CSS_SELECTOR, "article.job")) == 2
    assert "queued" in driver.find_element(By.CSS_SELECTOR, target).text
    assert driver.find_elements(By.CSS_SELECTOR, f"{target} img.thumb")
    assert has_colour(grid, (0, 0, grid.width, 30), HEADER_RGB)
    driver.find_element(By.CSS_SELECTOR, f"{target} button").click()
    wait(lambda: "canceled" in driver.find_element(By.CSS_SELECTOR, target).text,
         "the page never showed the job as canceled")
    assert requests.get(f"{farm.url}/v1/jobs/{queued[1]}", timeout=60).json()["status"] \
        == "canceled"
    assert requests.get(f"{farm.url}/v1/jobs/{queued[0]}", timeout=60).json()["status"] \
        == "queued"
    screenshot(driver, "6-canceled", tmp_path)
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith(farm.url) for name in resources), resources  # nothing off-farm

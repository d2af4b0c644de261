"""A real browser (Debian's chromium, headless, driven by selenium) against a real farm.

No browser is downloaded at run time: selenium is given the system's `chromium` and
`chromedriver`. Where they are missing the tests are skipped, saying how to install them,
unless STYLEFARM_REQUIRE_BROWSER=1 (set by .ci/run, which installs them), where a
missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.procs import Api, Worker
from shared.migrate import upgrade
from tests.queue.conftest import TEST_ENV

INSTALL = "apt-get install -y chromium chromium-driver"


def browser_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    found = browser_paths()
    if found is None:
        message = f"no chromium and chromedriver on PATH; install them with `{INSTALL}`"
        if os.environ.get("STYLEFARM_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (STYLEFARM_REQUIRE_BROWSER=1: they are required here)")
        pytest.skip(message)
    return found


@pytest.fixture
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1200,900", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromium_paths[1]))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class LiveFarm:
    url: str
    api: Api
    worker: Worker
    data_dir: Path


@pytest.fixture
def live_farm(redis_url: str, tmp_path: Path) -> Iterator[LiveFarm]:
    """`stylefarm api` (gunicorn) and `stylefarm worker` on SQLite, as a farm runs them."""
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, **TEST_ENV, "STYLEFARM_DATA_DIR": str(data), "REDIS_URL": redis_url,
           "STYLEFARM_QUEUE_PREFIX": f"test-browser-{uuid.uuid4().hex[:8]}.",
           "DATABASE_URL": f"sqlite:///{data / 'stylefarm.db'}",
           "STYLEFARM_PREVIEW_INTERVAL": "0.3"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    upgrade(env["DATABASE_URL"])
    api = Api(env, tmp_path / "api.log")
    api.start()
    worker = Worker(env, tmp_path)
    try:
        worker.start()
        yield LiveFarm(api.url, api, worker, data)
    finally:
        worker.stop()
        api.stop()

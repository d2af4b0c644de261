"""`stylefarm up`, `submit`, `fetch` and `status` as a user runs them: real processes and ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image

from cli.services import free_port, redis_answers
from tests.queue.conftest import ROOT, picture

pytestmark = pytest.mark.slow


def stylefarm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def test_up_serves_a_submitted_batch_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "STYLEFARM_DATA_DIR")}
    env.update(STYLEFARM_DEVICE="cpu", STYLEFARM_QUEUE_PREFIX=f"up-{uuid.uuid4().hex[:6]}.",
               PYTHONPATH=str(ROOT))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--data-dir",
                           str(tmp_path / "data"), "--port", str(port)],
                          cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in log.read_text():  # up says so once everything answers
            assert up.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert requests.get(f"{api}/healthz", timeout=5).status_code == 200
        broker = re.search(r"broker (redis://\S+),", log.read_text()).group(1)
        assert redis_answers(broker)  # up started its own redis-server (no REDIS_URL)

        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "photo.png").write_bytes(picture(64, 48, 1))
        (tmp_path / "in" / "paint.png").write_bytes(picture(48, 48, 3))
        submitted = stylefarm(
            "submit", "--api", api, "--contents", str(tmp_path / "in" / "photo.png"),
            "--styles", str(tmp_path / "in" / "paint.png"), "--out", str(tmp_path / "out"),
            "--size", "32", "--min-size", "32", "--iterations", "2", env=env)
        assert submitted.returncode == 0, submitted.stderr + log.read_text()
        assert "100.0/100%" in submitted.stderr  # the progress bar ran to the end
        with Image.open(tmp_path / "out" / "photo__paint.png") as result:
            assert result.size == (32, 24)
        batch_id = re.search(r"batch (\w+): 1 jobs", submitted.stderr).group(1)

        assert "images: 2 uploaded, 0 already on the farm" in submitted.stderr
        result = tmp_path / "out" / "photo__paint.png"
        before = result.stat().st_mtime_ns
        again = stylefarm("fetch", batch_id, "--api", api, "--out", str(tmp_path / "out"),
                          env=env)
        assert again.returncode == 0, again.stderr
        assert "0 results saved" in again.stderr and "1 were already there" in again.stderr
        assert result.stat().st_mtime_ns == before  # kept, not downloaded again

        later = stylefarm(  # the same images again: nothing to upload; collect with fetch
            "submit", "--api", api, "--contents", str(tmp_path / "in" / "photo.png"),
            "--styles", str(tmp_path / "in" / "paint.png"), "--out", str(tmp_path / "later"),
            "--size", "32", "--min-size", "32", "--iterations", "2", "--no-wait", env=env)
        assert later.returncode == 0, later.stderr
        assert "images: 0 uploaded, 2 already on the farm" in later.stderr
        fetched = stylefarm("fetch", later.stdout.strip(), "--api", api,
                            "--out", str(tmp_path / "later"), env=env)
        assert fetched.returncode == 0, fetched.stderr
        assert "1 results saved" in fetched.stderr
        with Image.open(tmp_path / "later" / "photo__paint.png") as result:  # submit's names
            assert result.size == (32, 24)

        status = stylefarm("status", batch_id, "--api", api, env=env)
        assert status.returncode == 0
        assert status.stdout.startswith(f"{batch_id} finished 100.0% succeeded=1")

        missing = stylefarm("status", "nosuchbatch", "--api", api, env=env)
        assert missing.returncode == 2 and "404" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
        bad = stylefarm("submit", "--api", api, "--contents", str(tmp_path / "in"),
                        "--styles", str(tmp_path / "in"), "--out", str(tmp_path / "o2"),
                        "--size", "99999", env=env)
        assert bad.returncode == 2 and "size" in bad.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0, log.read_text()
    unreachable = stylefarm("status", batch_id, "--api", api, env=env)
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith("stylefarm: error: cannot reach the API")
    assert not redis_answers(broker)  # everything up started is gone

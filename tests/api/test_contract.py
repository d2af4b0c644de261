"""The API's contract, checked from outside: a valid OpenAPI 3.0 document, a live server
that schemathesis cannot make answer anything undocumented, and gunicorn's own errors in
the documented JSON shape. The server is the real one (`stylefarm api`: gunicorn on
127.0.0.1), on the test's database and this session's Redis prefix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from cli.services import free_port, wait_for_api
from shared.migrate import upgrade
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# State for the generated requests (uploaded images, real cursors); nothing else.
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
# What a hook may do: put state into a request. A filter (filter_*) would hide the requests
# that fail, and an after_*/before_call hook could rewrite what the checks see.
ALLOWED_HOOKS = {"map_case"}
# Bounded: examples per operation and phase; the whole run takes about 20 s on 2 cores.
MAX_EXAMPLES = int(os.environ.get("STYLEFARM_FUZZ_EXAMPLES", "10"))
SEED = os.environ.get("STYLEFARM_FUZZ_SEED", "1")


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """`stylefarm api` on a free loopback port; its base URL."""
    upgrade(settings.effective_database_url)
    port = free_port()
    env = {**os.environ, "STYLEFARM_DATA_DIR": str(settings.data_dir),
           "DATABASE_URL": settings.effective_database_url, "REDIS_URL": settings.redis_url,
           "STYLEFARM_QUEUE_PREFIX": settings.queue_prefix}
    log = settings.data_dir.parent / "api.log"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--threads", "4", "--no-migrate"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_api(url, proc, 120):
            pytest.fail(f"the API did not start:\n{log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: finish it, never hang or fail
            proc.kill()
            proc.wait()


def test_the_openapi_document_is_valid_openapi_3_0(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    assert spec["openapi"].startswith("3.0")
    validate(spec)  # raises, naming the place, on anything invalid (was exclusiveMinimum: 0)


def raw_request(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no HTTP library would send these) and read the reply."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


GUNICORN_REFUSALS = [
    (b"GET /v1/jobs?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
    (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"
     + b"".join(b"X-%d: y\r\n" % n for n in range(200)) + b"\r\n", 431),
    (b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    (b"NONSENSE\r\n\r\n", 400),
]


def test_gunicorns_own_errors_are_json(live_api: str) -> None:
    for request_bytes, status in GUNICORN_REFUSALS:
        got, headers, body = raw_request(live_api, request_bytes)
        assert got == status, request_bytes[:60]
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["status"] == status and error["message"]


def test_schemathesis_runs_with_its_default_expectations() -> None:
    """No configuration that widens what a check accepts (expected-statuses, checks turned
    off), and hooks that only put state into requests: a rule the document does not state
    must fail the run, not be allowed for."""
    configs = [path for path in (ROOT / "schemathesis.toml", HOOKS.with_name("schemathesis.toml"))
               if path.exists()]
    assert configs == [], "schemathesis runs without a config file: its defaults"
    assert "[tool.schemathesis" not in (ROOT / "pyproject.toml").read_text()
    registered = subprocess.run(
        [sys.executable, "-c", "import json, schemathesis.hooks as h\n"
         "from schemathesis.core.hooks import load_from_path\n"
         f"load_from_path({str(HOOKS)!r})\n"
         "print(json.dumps({k: len(v) for k, v in "
         "h.GLOBAL_HOOK_DISPATCHER.get_all().items() if v}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    hooks = json.loads(registered.stdout)
    assert set(hooks) == ALLOWED_HOOKS, hooks
    assert "expected-statuses" not in HOOKS.read_text()


@pytest.mark.slow
@pytest.mark.timeout(3000)  # a hang guard: ~1 min here, 10x that on a loaded machine
def test_schemathesis_finds_nothing(live_api: str, tmp_path: Path) -> None:
    """Every check on, every phase (coverage, fuzzing, stateful), schemathesis' default
    expectations, a fixed seed so that a failure repeats; STYLEFARM_FUZZ_SEED and
    STYLEFARM_FUZZ_EXAMPLES widen the search."""
    started = time.monotonic()
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "STYLEFARM_FUZZ_API": live_api,
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run",
         f"{live_api}/v1/openapi.json", "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
         "--seed", SEED, "--workers", "2", "--request-timeout", "30", "--no-color"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2700)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-3000:]}"
    generated = [line for line in summary.splitlines() if "generated" in line]
    assert generated and "passed" in generated[-1], summary
    phases = summary[summary.find("Test Phases:"):summary.find("Failures:")
                     if "Failures:" in summary else summary.find("Test cases:")]
    print(f"schemathesis: {generated[-1].strip()} in {time.monotonic() - started:.1f} s\n"
          f"{phases}")

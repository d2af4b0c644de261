"""`stylefarm demo`: the sample job rendered through the real stack, on embedded defaults.

It runs what a farm runs, on this machine: `stylefarm up` in the background (a private
Redis unless REDIS_URL answers, SQLite in a temporary data directory, the API under
gunicorn, one worker), then uploads the samples, submits them as a batch, follows it
with a progress bar, saves the result and shuts the stack down. `--local` renders in
this process instead (`stylefarm render` on the samples).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from cli.main import Runner, UsageError

if TYPE_CHECKING:
    from cli.client import Api

STARTUP_TIMEOUT_S = 120


def demo_command(parser: argparse.ArgumentParser) -> Runner:
    """Render the sample job (Tübingen as The Starry Night) through the whole stack."""
    from cli import render

    local = render.demo_command(parser)  # its options: --output, --device, --quiet, ...
    parser.add_argument("--local", action="store_true",
                        help="render in this process instead of through API, queue and worker")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the stack's data directory (default: a temporary one, removed)")

    def run(args: argparse.Namespace) -> int:
        return local(args) if args.local else run_through_stack(args)

    return run


def run_through_stack(args: argparse.Namespace) -> int:
    from cli import client, render
    from cli.services import free_port

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="stylefarm-demo-"))
    port = free_port()
    env = dict(os.environ)
    if args.device:
        env["STYLEFARM_DEVICE"] = args.device
    log = data_dir / "up.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the stack is stopped below
    stack = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--data-dir", str(data_dir), "--port", str(port)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    api = client.Api(f"http://127.0.0.1:{port}")
    try:
        if not args.quiet:
            print(f"starting the stack (logs in {data_dir})...", file=sys.stderr)
        _wait_for_api(api, stack, log)
        samples = [render.SAMPLES / render.DEMO_CONTENT, render.SAMPLES / render.DEMO_STYLE]
        ids = client.upload(api, samples, quiet=args.quiet)
        batch = api.json("POST", "/v1/batches", json={
            "name": "demo", "contents": [ids[samples[0]]], "styles": [ids[samples[1]]],
            "params": render.demo_params().to_dict()})
        batch = client.wait(api, batch["id"], quiet=args.quiet)
        [job] = list(client.batch_jobs(api, batch["id"]))
        if job["status"] != "succeeded":
            raise UsageError(f"the demo job {job['status']}: {job['error']}")
        output = Path(args.output)
        _save(api.call("GET", job["links"]["result"]).content, output)
        if not args.quiet:
            print(f"wrote {output} (rendered by worker {job['worker']})")
        return 0
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stack.kill()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_api(api: Api, stack: subprocess.Popen, log: Path) -> None:
    from cli.services import wait_for_api

    if not wait_for_api(api.base, stack, STARTUP_TIMEOUT_S):
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise UsageError(f"the stack did not start:\n{tail}")


def _save(data: bytes, output: Path) -> None:
    """PNG as it came; another extension converted by Pillow."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".png":
        output.write_bytes(data)
        return
    from PIL import Image

    Image.open(io.BytesIO(data)).convert("RGB").save(output)

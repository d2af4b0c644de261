"""`stylefarm submit` and `stylefarm status`: the farm's HTTP API from a terminal.

Errors are one line on stderr and exit status 2: the API unreachable, or a 4xx
answer (its message, as the API words it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli.main import Runner, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
POLL_S = 1.0


def default_api() -> str:
    return os.environ.get("STYLEFARM_API", "http://127.0.0.1:8000")


class Api:
    """A thin requests wrapper: JSON in and out, failures as UsageError (exit 2)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        import requests

        self.base = base.rstrip("/")
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            response = self.http.request(method, url, timeout=60, **kwargs)
        except requests.ConnectionError:
            raise UsageError(f"cannot reach the API at {self.base} (is `stylefarm up` "
                             "running? set --api or STYLEFARM_API)") from None
        except requests.RequestException as exc:
            raise UsageError(f"request to {url} failed: {exc}") from None
        if response.status_code >= 400:
            raise UsageError(f"{method} {path}: {response.status_code} {_message(response)}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


def _message(response: Any) -> str:
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message", "")
        fields = error.get("fields") or {}
        details = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items())
        return f"{message} ({details})" if details else message
    except (ValueError, AttributeError):
        return response.text[:300]


def image_files(sources: list[str]) -> list[Path]:
    """Files as given, and the images inside directories (sorted by name)."""
    found: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{source}: no such file or directory")
    if not found:
        raise UsageError(f"no images in {' '.join(sources)}")
    return found


def upload(api: Api, paths: list[Path]) -> dict[Path, str]:
    ids: dict[Path, str] = {}
    for path in paths:
        with path.open("rb") as handle:
            ids[path] = api.json("POST", "/v1/images", files={"file": (path.name, handle)})["id"]
    return ids


def _add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=default_api(),
                        help="API base URL (default: STYLEFARM_API or http://127.0.0.1:8000)")
    parser.add_argument("--token", default=os.environ.get("STYLEFARM_TOKEN"),
                        help="API key (default: STYLEFARM_TOKEN)")


# ---------------------------------------------------------------------------- submit


def submit_command(parser: argparse.ArgumentParser) -> Runner:
    """Upload images, submit every content with every style as one batch, collect results."""
    from cli.render import add_param_options

    parser.add_argument("--contents", nargs="+", required=True, metavar="DIR|FILE")
    parser.add_argument("--styles", nargs="+", required=True, metavar="DIR|FILE")
    parser.add_argument("--out", required=True, type=Path, help="directory for the results")
    parser.add_argument("--name", default="", help="batch name")
    parser.add_argument("--priority", type=int, default=0, help="-10..10; higher runs sooner")
    parser.add_argument("--no-wait", action="store_true",
                        help="print the batch id and return without waiting")
    _add_api_option(parser)
    add_param_options(parser)
    return run_submit


def run_submit(args: argparse.Namespace) -> int:
    from cli.render import params_from_args

    params = params_from_args(args).to_dict()
    api = Api(args.api, args.token)
    contents, styles = image_files(args.contents), image_files(args.styles)
    ids = upload(api, list(dict.fromkeys(contents + styles)))
    batch = api.json("POST", "/v1/batches", json={
        "name": args.name, "contents": [ids[p] for p in contents],
        "styles": [ids[p] for p in styles], "params": params, "priority": args.priority})
    print(f"batch {batch['id']}: {batch['job_count']} jobs", file=sys.stderr)
    if args.no_wait:
        print(batch["id"])
        return 0
    batch = wait(api, batch["id"])
    names = {sha: path.stem for path, sha in ids.items()}
    return download(api, batch, names, args.out)


def wait(api: Api, batch_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Poll the batch with a progress bar (percent and ETA) until none of its jobs is active."""
    from tqdm import tqdm

    with tqdm(total=100.0, unit="%", disable=quiet, dynamic_ncols=True,
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f}% [{elapsed}<{remaining}]{postfix}"
              ) as bar:
        while True:
            batch = api.json("GET", f"/v1/batches/{batch_id}")
            bar.update(batch["progress"] * 100 - bar.n)
            counts = {k: v for k, v in batch["counts"].items() if v}
            bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in counts.items()), refresh=True)
            if batch["finished"]:
                return batch
            time.sleep(POLL_S)


def batch_jobs(api: Api, batch_id: str) -> Iterator[dict[str, Any]]:
    path: str | None = f"/v1/jobs?batch={batch_id}&limit=1000"
    while path:
        page = api.json("GET", path)
        yield from page["items"]
        path = page["next"]


def download(api: Api, batch: dict[str, Any], names: dict[str, str], out: Path) -> int:
    """Save each succeeded job's result as <content>__<style>.png; report the others."""
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for job in batch_jobs(api, batch["id"]):
        style = "+".join(names.get(s["image"], s["image"][:8]) for s in job["styles"])
        stem = f"{names.get(job['content'], job['content'][:8])}__{style}"
        if job["status"] == "succeeded":
            response = api.call("GET", job["links"]["result"])
            (out / f"{stem}.png").write_bytes(response.content)
        else:
            failed += 1
            print(f"{stem}: {job['status']}" + (f": {job['error']}" if job["error"] else ""),
                  file=sys.stderr)
    print(f"{batch['counts'].get('succeeded', 0)} results in {out}", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------------- status


def status_command(parser: argparse.ArgumentParser) -> Runner:
    """Show a batch's progress: counts per status, percent done, time left."""
    parser.add_argument("batch", help="batch id")
    _add_api_option(parser)
    return run_status


def run_status(args: argparse.Namespace) -> int:
    batch = Api(args.api, args.token).json("GET", f"/v1/batches/{args.batch}")
    counts = " ".join(f"{k}={v}" for k, v in batch["counts"].items() if v)
    eta = batch.get("eta_seconds")
    state = "finished" if batch["finished"] else "running"
    print(f"{batch['id']} {state} {batch['progress'] * 100:.1f}% {counts}"
          + (f" eta {eta:.0f}s" if eta and not batch["finished"] else ""))
    return 0

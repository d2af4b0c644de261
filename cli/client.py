"""`stylefarm submit`, `fetch` and `status`: the farm's HTTP API from a terminal.

Built for big batches of big images: an image the farm already has (its id is the
sha256 of its bytes) is not uploaded again; uploads and downloads run a few at a time;
results are written atomically, so an interrupted `fetch` resumes where it stopped.
Errors are one line on stderr and exit status 2: the API unreachable, or a 4xx
answer (its message, as the API words it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cli.main import Runner, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
POLL_S = 1.0
TRANSFERS = 4  # uploads or downloads at a time
MANIFEST = ".stylefarm-{batch}.json"  # in --out: result names for a later `fetch`


def default_api() -> str:
    return os.environ.get("STYLEFARM_API", "http://127.0.0.1:8000")


class Api:
    """A thin requests wrapper: JSON in and out, failures as UsageError (exit 2)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self._local = threading.local()  # a requests.Session per thread (transfers)

    @property
    def http(self) -> Any:
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
            if self.token:
                self._local.session.headers["Authorization"] = f"Bearer {self.token}"
        return self._local.session

    def call(self, method: str, path: str, ok: Iterable[int] = (), **kwargs: Any) -> Any:
        """The response; a status >= 400 not in `ok` is a UsageError."""
        import requests

        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            response = self.http.request(method, url, timeout=60, **kwargs)
        except requests.ConnectionError:
            raise UsageError(f"cannot reach the API at {self.base} (is `stylefarm up` "
                             "running? set --api or STYLEFARM_API)") from None
        except requests.RequestException as exc:
            raise UsageError(f"request to {url} failed: {exc}") from None
        if response.status_code >= 400 and response.status_code not in ok:
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


def upload(api: Api, paths: list[Path], *, quiet: bool = False) -> dict[Path, str]:
    """Each file's image id, uploading only the images the farm does not have yet."""
    from shared.storage import sha256_hex

    def one(path: Path) -> tuple[Path, str, bool]:
        data = path.read_bytes()
        digest = sha256_hex(data)
        if api.call("GET", f"/v1/images/{digest}", ok=(404,)).status_code == 200:
            return path, digest, False
        reply = api.json("POST", "/v1/images", files={"file": (path.name, data)})
        return path, reply["id"], True

    done = transfer(one, paths, "upload", quiet)
    sent = sum(new for _, _, new in done)
    if not quiet:
        print(f"images: {sent} uploaded, {len(done) - sent} already on the farm",
              file=sys.stderr)
    return {path: image_id for path, image_id, _ in done}


def transfer(work: Callable[[Any], Any], items: list[Any], what: str, quiet: bool) -> list[Any]:
    """`work` over `items`, TRANSFERS at a time, with a bar; the first error stops it."""
    from tqdm import tqdm

    with ThreadPoolExecutor(TRANSFERS) as pool, tqdm(
            total=len(items), unit=what, disable=quiet or len(items) < 2,
            dynamic_ncols=True) as bar:
        futures = [pool.submit(work, item) for item in items]
        results = []
        try:
            for future in futures:
                results.append(future.result())
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results


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
    names = {sha: path.stem for path, sha in ids.items()}
    write_manifest(args.out, batch["id"], names)
    if args.no_wait:
        print(batch["id"])
        return 0
    return download(api, wait(api, batch["id"]), names, args.out)


def write_manifest(out: Path, batch_id: str, names: dict[str, str]) -> None:
    """Image id -> file stem, so `fetch` names results as `submit` would have."""
    from shared.storage import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MANIFEST.format(batch=batch_id), json.dumps(names, indent=1).encode())


def read_manifest(out: Path, batch_id: str) -> dict[str, str]:
    try:
        return json.loads((out / MANIFEST.format(batch=batch_id)).read_text())
    except (OSError, ValueError):
        return {}


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


def download(api: Api, batch: dict[str, Any], names: dict[str, str], out: Path,
             *, quiet: bool = False) -> int:
    """Save each succeeded job's result as <content>__<style>.png (names: image id -> stem;
    unnamed images go by the start of their id); report the others. Results already in
    `out` are kept, so a second run fetches only what the first did not."""
    from shared.models import ACTIVE
    from shared.storage import atomic_write

    active = {status.value for status in ACTIVE}
    out.mkdir(parents=True, exist_ok=True)
    failed, wanted, present, pending = 0, [], 0, 0
    for job in batch_jobs(api, batch["id"]):
        style = "+".join(names.get(s["image"], s["image"][:12]) for s in job["styles"])
        target = out / f"{names.get(job['content'], job['content'][:12])}__{style}.png"
        if job["status"] in active:
            pending += 1
        elif job["status"] != "succeeded":
            failed += 1
            print(f"{target.stem}: {job['status']}" + (f": {job['error']}" if job["error"]
                                                       else ""), file=sys.stderr)
        elif target.exists():
            present += 1
        else:
            wanted.append((job["links"]["result"], target))

    def one(item: tuple[str, Path]) -> None:
        link, target = item
        atomic_write(target, api.call("GET", link).content)

    transfer(one, wanted, "result", quiet)
    if not quiet:
        print(f"{len(wanted)} results saved in {out}"
              + (f" ({present} were already there)" if present else "")
              + (f"; {pending} jobs not finished yet" if pending else ""), file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- fetch


def fetch_command(parser: argparse.ArgumentParser) -> Runner:
    """Download a batch's results (after `submit --no-wait`, or to resume a download)."""
    parser.add_argument("batch", help="batch id")
    parser.add_argument("--out", type=Path, help="directory for the results")
    parser.add_argument("--sheet", type=Path, metavar="FILE.png",
                        help="also (or, without --out, only) save the batch's contact sheet: "
                             "one labelled cell per job")
    parser.add_argument("--no-wait", action="store_true",
                        help="fetch what has finished now instead of waiting for the batch")
    _add_api_option(parser)
    return run_fetch


def run_fetch(args: argparse.Namespace) -> int:
    from shared.storage import atomic_write

    if args.out is None and args.sheet is None:
        raise UsageError("say where: --out DIR for the results, --sheet FILE.png for the "
                         "contact sheet, or both")
    api = Api(args.api, args.token)
    batch = api.json("GET", f"/v1/batches/{args.batch}")
    if not args.no_wait:
        batch = wait(api, batch["id"])
    status = 0
    if args.out is not None:
        status = download(api, batch, read_manifest(args.out, batch["id"]), args.out)
    if args.sheet is not None:
        atomic_write(args.sheet, api.call("GET", f"/v1/batches/{batch['id']}/sheet").content)
        print(f"contact sheet saved as {args.sheet}", file=sys.stderr)
    return status


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

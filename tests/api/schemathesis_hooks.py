"""schemathesis hooks for tests/api/test_contract.py: the state a request may refer to.

Some rules of the API depend on state, or on the bytes of a file, not on the request's
shape, so no OpenAPI document can state them: an image id must name an uploaded image
(in a body; in a path, an unknown image or job is a documented 404, and the hook
reaches the ones behind it), a cursor must be one this API handed out, an upload must be a whole
image, and an Idempotency-Key reused for another request is a 422. The hook gives the
generated requests that state, and nothing else: it only ever replaces a value the
document allows with another value it allows (a well-formed image id with an uploaded
one, a well-formed key with a fresh one), and only in requests the document allows, so
a request that breaks the document stays broken, and schemathesis' checks run with
their default expectations. It filters nothing and changes no check (test_contract.py
fails if a hook here ever could).

The API to prepare is STYLEFARM_FUZZ_API (its base URL), set by the test.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import urllib.parse
import urllib.request
import uuid
from typing import Any

import schemathesis
from PIL import Image

IMAGE_ID = re.compile(r"^[0-9a-f]{64}$")
KEY = re.compile(r"^[!-~]{1,200}$")
JSON_OPERATIONS = {("POST", "/v1/jobs"), ("POST", "/v1/batches")}


def png(seed: bytes) -> bytes:
    """A small PNG whose colour follows `seed`: different seeds, different images."""
    red, green, blue = hashlib.sha256(seed).digest()[:3]
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (red, green, blue)).save(buffer, "PNG")
    return buffer.getvalue()


def _call(method: str, path: str, body: bytes | None = None,
          content_type: str = "application/json") -> Any:
    request = urllib.request.Request(os.environ["STYLEFARM_FUZZ_API"] + path, data=body,
                                     method=method, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def _upload(data: bytes) -> str:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return _call("POST", "/v1/images", body, f"multipart/form-data; boundary={boundary}")["id"]


@functools.cache
def state() -> tuple[list[str], list[str], list[str]]:
    """Uploaded image ids, cursors of real pages, and job ids (made once, on first use)."""
    images = [_upload(png(b"%d" % n)) for n in range(3)]
    jobs = [_call("POST", "/v1/jobs", json.dumps({
        "content": content, "styles": [images[2]], "params": {"size": 32}}).encode())["id"]
        for content in images[:2]]
    next_url = _call("GET", "/v1/jobs?limit=1")["next"]
    cursor = urllib.parse.parse_qs(urllib.parse.urlsplit(next_url).query)["cursor"][0]
    return images, [cursor], jobs


def _pick(options: list[str], value: str) -> str:
    return options[int(hashlib.sha256(value.encode()).hexdigest(), 16) % len(options)]


def _real_ids(value: Any) -> Any:
    """Every well-formed image id in a JSON body replaced by an uploaded image's id."""
    if isinstance(value, str):
        return _pick(state()[0], value) if IMAGE_ID.match(value) else value
    if isinstance(value, list):
        return [_real_ids(item) for item in value]
    if isinstance(value, dict):
        return {key: _real_ids(item) for key, item in value.items()}
    return value


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: Any) -> Any:
    """The one hook: schemathesis applies map_case in every phase (coverage, fuzzing,
    stateful), the container hooks (map_body...) only in some. Only requests the document
    allows (positive cases) are given state: a negative case must stay as generated."""
    meta = case.meta
    if meta is not None and meta.generation.mode != "positive":
        return case
    operation = (case.operation.method.upper(), case.operation.path)
    if operation in JSON_OPERATIONS and case.body is not None:
        case.body = _real_ids(case.body)
    elif operation == ("POST", "/v1/images") and isinstance(case.body, dict) \
            and isinstance(case.body.get("file"), bytes | str):
        # In place: schemathesis revalidates a body assigned anew, and counts any body with
        # bytes in it as invalid (its validator cannot read binary), which would turn this
        # allowed request into a "negative" one.
        raw = case.body["file"]
        case.body["file"] = png(raw.encode() if isinstance(raw, str) else raw)
    path_parameters = case.path_parameters
    for name, known in (("image_id", state()[0]), ("job_id", state()[2])):
        if isinstance(path_parameters, dict) and isinstance(path_parameters.get(name), str):
            path_parameters = {**path_parameters, name: _pick(known, path_parameters[name])}
            case.path_parameters = path_parameters
    query = case.query
    if isinstance(query, dict) and isinstance(query.get("cursor"), str) \
            and 1 <= len(query["cursor"]) <= 200:
        case.query = {**query, "cursor": _pick(state()[1], query["cursor"])}
    key = case.headers.get("Idempotency-Key") if case.headers is not None else None
    if isinstance(key, str) and KEY.fullmatch(key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex  # a case-insensitive dict
    return case

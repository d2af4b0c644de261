"""`Idempotency-Key` on POSTs: a retried request gets the first reply and creates nothing.

The reply is stored in the SAME transaction as what the request created (see
`commit`): either both are committed or neither, and when two copies of a request
race, the unique (owner, key) constraint lets exactly one commit; the other rolls
back everything it did and replays the winner's reply. Only successful (2xx)
replies are kept: a request that failed created nothing, so repeating it may succeed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from flask import Response, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.context import owner
from api.errors import ApiError
from shared.models import IdempotentReply

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200
# Printable ASCII without spaces: no control character can reach the database, and no
# space that HTTP might strip off the ends, so the key the API sees is the key sent. The
# OpenAPI document states the same pattern (api/contract.py).
KEY_PATTERN = rf"^[!-~]{{1,{MAX_KEY_LENGTH}}}$"
_KEY = re.compile(KEY_PATTERN)
# Reply headers worth replaying.
_KEPT_HEADERS = ("Location",)

F = TypeVar("F", bound=Callable[..., Any])


class Replay(Exception):
    """The request was answered before: send this response instead."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _request_hash() -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.mimetype == "multipart/form-data":
        for name in sorted(request.form):
            digest.update(f"form {name}={request.form.getlist(name)}\n".encode())
        for name in sorted(request.files):
            for upload in request.files.getlist(name):
                position = upload.stream.tell()
                digest.update(f"file {name}\n".encode())
                digest.update(hashlib.sha256(upload.stream.read()).digest())
                upload.stream.seek(position)
    else:
        digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(reply: IdempotentReply, request_hash: str) -> Response:
    if reply.request_hash != request_hash:
        raise ApiError(422, "this Idempotency-Key was used for a different request; use a "
                            "new key for a new request", {HEADER: ["used with another request"]})
    response = jsonify(reply.body)
    response.status_code = reply.status_code
    for name, value in (reply.headers or {}).items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _find(session: Session, key: str) -> IdempotentReply | None:
    return session.scalar(select(IdempotentReply).where(
        IdempotentReply.owner == owner(), IdempotentReply.key == key))


def idempotent(view: F) -> F:
    """Decorate a POST view: repeats with a stored key get the stored reply.

    The view must finish its transaction with `idempotency.commit(...)`.
    """

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not _KEY.fullmatch(key):
            raise ApiError(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII "
                                f"characters, no spaces", {HEADER: ["empty, too long, or not "
                                                                    "printable ASCII"]})
        g.idempotency = (key, _request_hash())
        from api.context import db

        stored = _find(db(), key)
        if stored is not None:
            return _replay(stored, g.idempotency[1])
        try:
            return view(*args, **kwargs)
        except Replay as replay:
            return replay.response

    return wrapper  # type: ignore[return-value]


def commit(session: Session, status: int, body: Mapping[str, Any],
           headers: Mapping[str, str] | None = None) -> None:
    """Commit the request's work together with its reply (when it carries a key).

    Raises Replay when a concurrent copy of the request committed first: this copy's
    work is rolled back and the caller must not enqueue anything.
    """
    pending = g.get("idempotency")
    if pending is not None:
        key, request_hash = pending
        kept = {k: v for k, v in (headers or {}).items() if k in _KEPT_HEADERS}
        session.add(IdempotentReply(
            owner=owner(), key=key, method=request.method, path=request.path,
            request_hash=request_hash, status_code=status,
            body=json.loads(json.dumps(body, default=str)), headers=kept))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if pending is None:
            raise
        stored = _find(session, pending[0])
        if stored is None:
            raise
        raise Replay(_replay(stored, pending[1])) from None

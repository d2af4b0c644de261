"""The gunicorn worker the API runs in: gunicorn's own errors in the API's JSON shape.

gunicorn answers some requests before the app sees them: a request line over
`limit_request_line` (414), too many or too large headers (431), a malformed request
line or header (400). It writes those as a small HTML page through
`gunicorn.util.write_error`, and has no setting for their body; this worker replaces
that function, in its own process, with one that writes
`{"error": {"status", "message"}}` like every other error of the API (api/errors.py).
The limits themselves stay gunicorn's: they protect the server before any parsing.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

MAX_MESSAGE_CHARS = 300


def json_error(status: int, reason: str, message: str) -> bytes:
    """The full HTTP response for one of gunicorn's errors, as JSON."""
    body = json.dumps({"error": {"status": status,
                                 "message": f"{reason}: {message}"[:MAX_MESSAGE_CHARS]
                                 if message else reason}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error (same arguments)."""
    util.write_nonblock(sock, json_error(status_int, reason, mesg))


class JsonErrorWorker(ThreadWorker):
    """gunicorn's gthread worker whose own error replies are JSON."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()



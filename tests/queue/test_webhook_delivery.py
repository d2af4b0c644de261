"""Posting a webhook: the target answers for itself; a redirect is not followed.

Both servers are on 127.0.0.1, in this process: no traffic leaves the machine."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.webhooks import WebhookError, post

PAYLOAD = {"delivery_id": "job-1", "event": "job.finished"}


@pytest.fixture
def serve() -> Iterator[Callable[[int, dict[str, str]], tuple[str, list[str]]]]:
    """Start a loopback HTTP server answering every POST with (status, headers); returns
    its URL and the list of paths it was posted to."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, headers: dict[str, str]) -> tuple[str, list[str]]:
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", hits

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_2xx_is_delivered(serve: Callable) -> None:
    url, hits = serve(204, {})
    post(f"{url}/hook", PAYLOAD)
    assert hits == ["/hook"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(serve: Callable, status: int) -> None:
    inside, inside_hits = serve(200, {})  # what the redirect points at: never reached
    target, target_hits = serve(status, {"Location": f"{inside}/internal"})
    with pytest.raises(WebhookError, match=f"answered {status}.*follow no redirect"):
        post(f"{target}/hook", PAYLOAD)
    assert target_hits == ["/hook"]
    assert inside_hits == []

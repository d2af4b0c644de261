"""Posting a webhook: the target answers for itself; a redirect is not followed.

Both servers are on 127.0.0.1, in this process: no traffic leaves the machine."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared import webhooks as shared_webhooks
from shared.webhooks import resolve_target
from worker.webhooks import WebhookError, post

PAYLOAD = {"delivery_id": "job-1", "event": "job.finished"}


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[str, list]]]:
    """Start a loopback HTTP server answering every POST with (status, headers); returns
    its URL and the list of paths it was posted to (with the Host header: `hosts=True`)."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, headers: dict[str, str], hosts: bool = False) -> tuple[str, list]:
        hits: list = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append((self.path, self.headers.get("Host")) if hosts else self.path)
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


def test_the_post_goes_to_the_address_that_was_checked(serve: Callable,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The name is resolved once: a DNS answer that changes after the check (rebinding to
    an address the farm must not reach) cannot redirect the POST. The receiver still sees
    the URL's own name in the Host header."""
    base, seen = serve(204, {}, hosts=True)
    port = base.rsplit(":", 1)[1]
    # A second answer would point elsewhere (still loopback: tests send nothing off the
    # machine, and nothing listens on 127.0.0.2), but it is never asked for.
    answers = iter(["127.0.0.1", "127.0.0.2"])
    calls: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[tuple]:
        if host != "hooks.example":  # the connection to the checked address itself
            return real_getaddrinfo(host, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 0))]

    monkeypatch.setattr(shared_webhooks.socket, "getaddrinfo", getaddrinfo)
    url = f"http://hooks.example:{port}/hook?x=1"
    address, problem = resolve_target(url, allow_private=True)
    assert (address, problem) == ("127.0.0.1", None)
    post(url, PAYLOAD, address)
    assert calls == ["hooks.example"]
    assert seen == [("/hook?x=1", f"hooks.example:{port}")]

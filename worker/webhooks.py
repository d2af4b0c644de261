"""Delivering a webhook: one POST, raising on anything but a 2xx (the task retries).

The POST goes to the address that was checked (`shared.webhooks.resolve_target`), not
to whatever the name resolves to a moment later: the connection is opened to that
address, and the URL's own name travels in the Host header and in TLS (SNI, and the
certificate is verified against the name). Redirects are not followed: a redirect
would send the payload to an address nobody checked (a 307 to http://0:PORT/ reaches
the farm's own loopback). A receiver that answers 3xx is treated as one that answers 500.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3

TIMEOUT_S = 10


class WebhookError(RuntimeError):
    pass


def post(url: str, payload: dict[str, Any], address: str | None = None) -> None:
    """POST `payload` as JSON to `url`, connecting to `address` (the checked one; None:
    the URL's host as written, which must then be an address or a name already checked)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    name = f"[{host}]" if ":" in host else host
    default_port = port == (443 if https else 80)
    headers = {"Host": name if default_port else f"{name}:{port}",
               "Content-Type": "application/json", "User-Agent": "stylefarm-webhook",
               "X-Stylefarm-Delivery": payload["delivery_id"]}
    timeout = urllib3.Timeout(connect=TIMEOUT_S, read=TIMEOUT_S)
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address or host, port, timeout=timeout, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(), server_hostname=host, assert_hostname=host)
    else:
        pool = urllib3.HTTPConnectionPool(address or host, port, timeout=timeout, retries=False)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with pool:
        response = pool.urlopen("POST", target, body=json.dumps(payload).encode(),
                                headers=headers, redirect=False, assert_same_host=False)
    if 300 <= response.status < 400:
        raise WebhookError(f"{url} answered {response.status} (a redirect to "
                           f"{response.headers.get('Location', '?')}); webhooks follow no "
                           f"redirect: give the final URL")
    if not 200 <= response.status < 300:
        raise WebhookError(f"{url} answered {response.status}")

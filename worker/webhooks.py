"""Delivering a webhook: one POST, raising on anything but a 2xx (the task retries).

Redirects are not followed: the target was checked before the POST
(`shared.webhooks.target_problem`), and a redirect would send the payload to an address
nobody checked (a 307 to http://0:PORT/ reaches the farm's own loopback). A receiver
that answers 3xx gets the same treatment as one that answers 500.
"""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT_S = 10


class WebhookError(RuntimeError):
    pass


def post(url: str, payload: dict[str, Any]) -> None:
    response = requests.post(
        url, json=payload, timeout=TIMEOUT_S, allow_redirects=False,
        headers={"User-Agent": "stylefarm-webhook", "X-Stylefarm-Delivery": payload["delivery_id"]},
    )
    if response.is_redirect:
        raise WebhookError(f"{url} answered {response.status_code} (a redirect to "
                           f"{response.headers.get('Location', '?')}); webhooks follow no "
                           f"redirect: give the final URL")
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"{url} answered {response.status_code}")

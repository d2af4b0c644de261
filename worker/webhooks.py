"""Delivering a webhook: one POST, raising on anything but a 2xx (the task retries)."""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT_S = 10


class WebhookError(RuntimeError):
    pass


def post(url: str, payload: dict[str, Any]) -> None:
    response = requests.post(
        url, json=payload, timeout=TIMEOUT_S,
        headers={"User-Agent": "stylefarm-webhook", "X-Stylefarm-Delivery": payload["delivery_id"]},
    )
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"{url} answered {response.status_code}")

"""Every reply says how long the app spent on it, so latency can be split app vs. network."""

from __future__ import annotations

import re


def test_replies_carry_server_timing(client) -> None:
    response = client.get("/v1/jobs/does-not-exist")
    assert response.status_code == 404
    match = re.fullmatch(r"app;dur=(\d+\.\d\d)", response.headers["Server-Timing"])
    assert match and float(match.group(1)) >= 0

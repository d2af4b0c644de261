"""Canceling queued jobs finishes them in the API: their webhooks are queued at once."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis as redis_client
from flask import Flask
from flask.testing import FlaskClient

from api.context import state
from shared.webhooks import owed, target_problem
from tests.api.conftest import QUEUE_PREFIX

HOOKS = f"{QUEUE_PREFIX}webhooks"


@pytest.fixture
def deliveries(redis_url: str) -> Iterator[redis_client.Redis]:
    conn = redis_client.Redis.from_url(redis_url)
    conn.delete(HOOKS)
    yield conn
    conn.delete(HOOKS)
    conn.close()


def queued_deliveries(conn: redis_client.Redis) -> list[tuple[str, dict]]:
    """(url, payload) of each webhook task waiting, oldest first (kombu pops the tail)."""
    out = []
    for raw in reversed(conn.lrange(HOOKS, 0, -1)):
        message = json.loads(raw)
        assert message["headers"]["task"] == "stylefarm.webhook"
        [url, payload], _, _ = json.loads(base64.b64decode(message["body"]))
        out.append((url, payload))
    return out


def test_canceling_a_queued_batch_queues_its_webhooks_once(
        app: Flask, client: FlaskClient, images: list[str],
        deliveries: redis_client.Redis) -> None:
    job = {"content": images[0], "styles": [images[1]], "params": {"size": 32}}
    batch = client.post("/v1/batches", json={
        "webhook_url": "http://hooks.local/batch",
        "jobs": [{**job, "webhook_url": "http://hooks.local/job"}, job]}).json
    assert queued_deliveries(deliveries) == []  # nothing finished yet

    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200
    sent = queued_deliveries(deliveries)
    assert [(url, payload["event"]) for url, payload in sent] == [
        ("http://hooks.local/job", "job.finished"), ("http://hooks.local/batch", "batch.finished")]
    assert sent[0][1]["status"] == "canceled" and sent[0][1]["batch_id"] == batch["id"]
    assert sent[1][1]["counts"] == {"canceled": 2}

    # A worker that later reaches these jobs' messages announces nothing again.
    ids = [j["id"] for j in client.get(f"/v1/jobs?batch={batch['id']}").json["items"]]
    with app.app_context():
        assert owed(state().sessions(), ids, state().settings) == []


def test_canceling_a_queued_job_queues_its_webhook(
        client: FlaskClient, images: list[str], deliveries: redis_client.Redis) -> None:
    job = client.post("/v1/jobs", json={"content": images[0], "styles": [images[1]],
                                        "webhook_url": "http://hooks.local/one"}).json
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    [(url, payload)] = queued_deliveries(deliveries)
    assert url == "http://hooks.local/one"
    assert (payload["job_id"], payload["status"]) == (job["id"], "canceled")


@pytest.mark.parametrize(("url", "allow_private", "refused"), [
    ("http://169.254.169.254/latest/meta-data", True, "link-local"),  # cloud metadata
    ("http://[::ffff:169.254.169.254]/", True, "link-local"),
    ("http://[fe80::1]/hook", True, "link-local"),
    ("http://10.1.2.3/hook", True, None),  # a receiver on the farm's network
    ("http://10.1.2.3/hook", False, "not a global address"),
    ("http://localhost:9000/hook", False, "not a global address"),
    # Not private, not global either: carrier-grade NAT, benchmarking, reserved, documentation.
    ("http://100.64.0.1/hook", False, "not a global address"),
    ("http://100.127.255.254/hook", False, "not a global address"),
    ("http://198.18.0.1/hook", False, "not a global address"),
    ("http://240.0.0.1/hook", False, "not a global address"),
    ("http://[2001:db8::1]/hook", False, "not a global address"),
    # IPv6 that carries a private IPv4 address: 6to4, NAT64, mapped.
    ("http://[2002:a00:1::]/hook", False, "(10.0.0.1)"),
    ("http://[64:ff9b::a00:1]/hook", False, "(10.0.0.1)"),
    ("http://[::ffff:100.64.0.1]/hook", False, "not a global address"),
    ("http://100.64.0.1/hook", True, None),  # a farm that allows private targets
    ("http://127.0.0.1:9000/hook", True, None),
    ("https://93.184.215.14/hook", False, None),
    ("https://hooks.example.com/x", False, None),  # a name: the worker checks what it resolves to
])
def test_webhook_targets(url: str, allow_private: bool, refused: str | None) -> None:
    problem = target_problem(url, allow_private=allow_private, resolve=False)
    assert (problem is None) if refused is None else (refused in problem)


def test_worker_side_check_resolves_names() -> None:
    assert "not a global" in target_problem("http://localhost/x", allow_private=False,
                                            resolve=True)
    assert target_problem("http://localhost/x", allow_private=True, resolve=True) is None
    assert "does not resolve" in target_problem("http://nowhere.invalid/x", allow_private=True,
                                                resolve=True)


def test_the_api_checks_the_urls_form_and_the_worker_where_it_leads(
        make_app: Callable[..., Flask], images: list[str]) -> None:
    """Where a URL leads is not a rule the OpenAPI document can state (nor one the API can
    know for a name), so the API accepts every URL of the documented pattern and the
    worker refuses a forbidden target when it posts, on the address it resolved."""
    client = make_app(webhook_private=False).test_client()
    job = {"content": images[0], "styles": [images[1]]}
    url = "http://169.254.169.254/x"
    assert client.post("/v1/jobs", json={**job, "webhook_url": url}).status_code == 202
    assert "link-local" in target_problem(url, allow_private=False, resolve=True)

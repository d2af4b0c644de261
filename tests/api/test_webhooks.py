"""Canceling queued jobs finishes them in the API: their webhooks are queued at once."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis as redis_client
from flask import Flask
from flask.testing import FlaskClient

from api.context import state
from shared.webhooks import owed
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

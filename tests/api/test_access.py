"""API keys (401s, one owner cannot see another's work) and Idempotency-Key replays."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api.auth import owner_id
from api.context import state
from shared.models import Job
from tests.api.conftest import image_bytes, upload


def _count_jobs(app: Flask) -> int:
    with app.app_context(), state().engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Job))


def test_api_keys_and_owner_isolation(make_app: Callable[..., Flask]) -> None:
    app = make_app(api_keys=("alice-key", "bob-key"))
    client = app.test_client()
    alice = {"Authorization": "Bearer alice-key"}
    bob = {"Authorization": "Bearer bob-key"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        reply = client.get("/v1/jobs", headers=headers)
        assert reply.status_code == 401 and reply.json["error"]["status"] == 401
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert upload(client, image_bytes()).status_code == 401
    assert client.get("/healthz").status_code == 200  # no key needed
    assert client.get("/v1/openapi.json").status_code == 200

    content = upload(client, image_bytes(seed=1), headers=alice).json["id"]
    style = upload(client, image_bytes(seed=2), headers=bob).json["id"]  # images are shared
    job = client.post("/v1/jobs", json={"content": content, "styles": [style]}, headers=alice)
    assert job.status_code == 202
    job_id = job.json["id"]
    batch = client.post("/v1/batches", json={"contents": [content], "styles": [style]},
                        headers=alice).json["id"]

    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get(f"/v1/batches/{batch}", headers=bob).status_code == 404
    assert client.get("/v1/jobs", headers=bob).json["items"] == []
    assert len(client.get("/v1/jobs", headers=alice).json["items"]) == 2
    with app.app_context(), state().engine.connect() as conn:
        owners = set(conn.scalars(select(Job.owner)))
    assert owners == {owner_id("alice-key")} and "alice" not in owner_id("alice-key")


def test_idempotency_key_replays_and_creates_nothing(app: Flask, client: FlaskClient,
                                                     images: list[str],
                                                     queue: Callable[[], int]) -> None:
    body = {"content": images[0], "styles": [images[1]]}
    key = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=body, headers=key)
    second = client.post("/v1/jobs", json=body, headers=key)
    assert first.status_code == second.status_code == 202
    assert second.json["id"] == first.json["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _count_jobs(app) == 1 and queue() == 1

    other = client.post("/v1/jobs", json={**body, "priority": 1}, headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json["error"]["fields"]
    assert _count_jobs(app) == 1

    batch = {"contents": images[:2], "styles": images[2:]}
    b1 = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b"})
    b2 = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b"})
    assert b1.json["id"] == b2.json["id"] and _count_jobs(app) == 5 and queue() == 5
    # A failed request is not stored: fixing it and repeating the key goes through.
    bad = {"content": images[0], "styles": ["a" * 64]}
    assert client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "c"}).status_code == 422
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "c"}).status_code == 202


def test_concurrent_duplicates_create_one_job(app: Flask, images: list[str]) -> None:
    body = {"content": images[0], "styles": [images[1]]}

    def post(_: int) -> tuple[int, str]:
        reply = app.test_client().post("/v1/jobs", json=body,
                                       headers={"Idempotency-Key": "race"})
        return reply.status_code, reply.json["id"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, range(4)))
    assert {status for status, _ in results} == {202}
    assert len({job_id for _, job_id in results}) == 1
    assert _count_jobs(app) == 1


def test_upload_with_idempotency_key(client: FlaskClient) -> None:
    data = image_bytes(seed=7)
    key = {"Idempotency-Key": "img"}
    first, second = upload(client, data, headers=key), upload(client, data, headers=key)
    assert first.status_code == second.status_code == 201 and first.json == second.json
    other = upload(client, image_bytes(seed=8), headers=key)
    assert other.status_code == 422

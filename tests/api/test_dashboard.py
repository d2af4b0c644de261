"""The dashboard over HTTP: every page, every action, the live channel, sign-in, Swagger UI.

Real app, real database (SQLite, and PostgreSQL when TEST_DATABASE_URL is set), real
Redis; the jobs' ends are written as a worker writes them (dashboard_helpers.finish).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import redis as redis_client
from flask import Flask
from flask.testing import FlaskClient

from shared import workers
from tests.api.conftest import QUEUE_PREFIX
from tests.api.dashboard_helpers import batch_jobs, finish


def submit(client: FlaskClient, images: list[str], contents: int = 2, styles: int = 1,
           name: str = "dash", headers: dict[str, str] | None = None) -> str:
    pool = (images * 3000)[:contents]
    reply = client.post("/v1/batches", json={
        "name": name, "contents": pool, "styles": images[-styles:], "params": {"size": 48}},
        headers=headers or {})
    assert reply.status_code == 202, reply.json
    return reply.json["id"]


def job_cards(html: str) -> list[str]:
    return re.findall(r'data-job="([0-9a-f]{32})"', html)


@pytest.fixture
def fresh_app(make_app: Callable[..., Flask]) -> Flask:
    """No live or metrics cache: each request sees the database as it is now."""
    return make_app(ui_live_cache_seconds=0, metrics_cache_seconds=0)


@pytest.fixture
def ui(fresh_app: Flask) -> FlaskClient:
    return fresh_app.test_client()


def test_pages_show_batches_jobs_and_a_job(ui: FlaskClient, images: list[str],
                                           fresh_app: Flask, queue: Callable[[], int]) -> None:
    batch_id = submit(ui, images, contents=3, name="first batch")
    jobs = batch_jobs(ui, batch_id)
    settings = fresh_app.extensions["stylefarm"].settings
    finish(settings, jobs[0]["id"], seed=1, scales=[[0, 1.25], [1, 3.5]])
    finish(settings, jobs[1]["id"], outcome="failed")

    home = ui.get("/")
    assert home.status_code == 200 and "text/html" in home.content_type
    page = home.get_data(as_text=True)
    assert "first batch" in page and f'data-batch="{batch_id}"' in page
    assert "succeeded 1" in page and "failed 1" in page and "queued 1" in page

    grid = ui.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert job_cards(grid) == [j["id"] for j in jobs]
    assert grid.count("/ui/images/") == 6  # content and style thumbnails on each card
    only_failed = ui.get(f"/batches/{batch_id}?status=failed").get_data(as_text=True)
    assert job_cards(only_failed) == [jobs[1]["id"]]
    assert ui.get(f"/batches/{batch_id}?status=bogus").status_code == 400

    done = ui.get(f"/jobs/{jobs[0]['id']}").get_data(as_text=True)
    assert "succeeded" in done and "testhost:1" in done
    assert "1: 1.2 s" in done and "2: 3.5 s" in done  # time per scale, 1-based
    assert f"/ui/jobs/{jobs[0]['id']}/result?download=1" in done
    assert "&#34;size&#34;" not in done and "<th>size</th>" in done  # parameters, as a table
    failed = ui.get(f"/jobs/{jobs[1]['id']}").get_data(as_text=True)
    assert "out of memory at 4096 px: try smaller" in failed and "Retry job" in failed

    result = ui.get(f"/ui/jobs/{jobs[0]['id']}/result")
    assert result.status_code == 200 and result.data[:8] == b"\x89PNG\r\n\x1a\n"
    thumb = ui.get(f"/ui/jobs/{jobs[0]['id']}/thumb")
    assert thumb.status_code == 200 and thumb.content_type == "image/jpeg"
    queued_thumb = ui.get(f"/ui/jobs/{jobs[2]['id']}/thumb")
    assert queued_thumb.content_type.startswith("image/svg+xml") and b"queued" in queued_thumb.data
    assert ui.get(f"/ui/images/{images[0]}/thumb").content_type == "image/jpeg"
    assert ui.get("/ui/images/nothex/thumb").status_code == 404
    assert ui.get("/jobs/0123456789abcdef0123456789abcdef").status_code == 404


def test_a_large_batch_pages_by_keyset(ui: FlaskClient, images: list[str]) -> None:
    batch_id = submit(ui, images, contents=130)
    first = ui.get(f"/batches/{batch_id}").get_data(as_text=True)
    cursor = re.search(r'cursor=([A-Za-z0-9_-]+)', first).group(1)
    second = ui.get(f"/batches/{batch_id}?cursor={cursor}").get_data(as_text=True)
    third_cursor = re.search(r'cursor=([A-Za-z0-9_-]+)"', second.split('class="more"')[1])
    third = ui.get(f"/batches/{batch_id}?cursor={third_cursor.group(1)}").get_data(as_text=True)
    seen = job_cards(first) + job_cards(second) + job_cards(third)
    assert [len(job_cards(p)) for p in (first, second, third)] == [60, 60, 10]
    assert seen == [j["id"] for j in batch_jobs(ui, batch_id)]
    assert 'class="more"' not in third


def test_cancel_and_retry_from_the_pages(ui: FlaskClient, images: list[str],
                                         queue: Callable[[], int]) -> None:
    batch_id = submit(ui, images, contents=3)
    jobs = [j["id"] for j in batch_jobs(ui, batch_id)]
    assert queue() == 3

    reply = ui.post(f"/jobs/{jobs[0]}/cancel", data={"next": f"/batches/{batch_id}"})
    assert reply.status_code == 303 and reply.headers["Location"] == f"/batches/{batch_id}"
    assert ui.get(f"/v1/jobs/{jobs[0]}").json["status"] == "canceled"
    again = ui.post(f"/jobs/{jobs[0]}/cancel")
    assert again.status_code == 303 and "note=the+job+is+canceled+already" in again.location

    assert ui.post(f"/jobs/{jobs[0]}/retry").status_code == 303
    assert ui.get(f"/v1/jobs/{jobs[0]}").json["status"] == "queued"
    assert queue() == 4  # the retry sent one more message

    assert ui.post(f"/batches/{batch_id}/cancel").status_code == 303
    counts = ui.get(f"/v1/batches/{batch_id}").json["counts"]
    assert counts["canceled"] == 3 and counts["queued"] == 0
    assert ui.post(f"/batches/{batch_id}/retry").status_code == 303
    assert ui.get(f"/v1/batches/{batch_id}").json["counts"]["queued"] == 3
    assert queue() == 7

    nothing = ui.post(f"/batches/{batch_id}/retry", data={"next": "https://evil.example/"})
    assert nothing.location.startswith("/batches/") and "nothing+to+retry" in nothing.location
    assert ui.post("/jobs/0123456789abcdef0123456789abcdef/cancel").status_code == 404


def test_live_fragments_change_with_the_batch_and_answer_304_otherwise(
        ui: FlaskClient, images: list[str], fresh_app: Flask) -> None:
    batch_id = submit(ui, images, contents=2)
    jobs = [j["id"] for j in batch_jobs(ui, batch_id)]
    url = f"/ui/live/batch?id={batch_id}"
    first = ui.get(url)
    assert first.status_code == 200 and first.headers["ETag"]
    assert job_cards(first.get_data(as_text=True)) == jobs
    unchanged = ui.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.data == b""

    finish(fresh_app.extensions["stylefarm"].settings, jobs[0], outcome="running")
    moved = ui.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert moved.status_code == 200 and moved.headers["ETag"] != first.headers["ETag"]
    assert 'aria-valuenow="20.0"' in moved.get_data(as_text=True)  # 0.4 of one job of two

    for view in ("batches", "workers", f"job?id={jobs[0]}"):
        assert ui.get(f"/ui/live/{view}").status_code == 200
    assert ui.get("/ui/live/nothing").status_code == 404
    assert ui.get("/ui/live/job?id=0123456789abcdef0123456789abcdef").status_code == 404


def test_live_fragment_is_rendered_once_per_interval_for_every_viewer(
        make_app: Callable[..., Flask], images: list[str]) -> None:
    client = make_app(ui_live_cache_seconds=3600).test_client()
    batch_id = submit(client, images, contents=1)
    url = f"/ui/live/batch?id={batch_id}"
    before = client.get(url)
    client.post(f"/batches/{batch_id}/cancel")
    assert client.get(url).get_data() == before.get_data()  # cached: no query this time


def test_workers_page_lists_live_records_and_drops_expired_ones(
        ui: FlaskClient, redis_url: str) -> None:
    conn = redis_client.Redis.from_url(redis_url)
    workers.publish(conn, QUEUE_PREFIX, "gpu-box:41", {
        "host": "gpu-box", "device": "cuda:0 NVIDIA H100", "device_memory": 3 * 2**30,
        "device_memory_total": 80 * 2**30, "job": "ab" * 16, "it_per_s": 12.5}, ttl=60)
    workers.publish(conn, QUEUE_PREFIX, "short-lived:7", {"host": "x", "device": "cpu"},
                    ttl=0.2)
    page = ui.get("/workers").get_data(as_text=True)
    assert "gpu-box:41" in page and "NVIDIA H100" in page and "3.0 GiB of 80.0 GiB" in page
    assert "12.5" in page and f"/jobs/{'ab' * 16}" in page
    deadline = time.monotonic() + 60  # a hang guard: the record's TTL is 0.2 s
    while "short-lived:7" in ui.get("/workers").get_data(as_text=True):
        assert time.monotonic() < deadline, "an expired worker record is still listed"
        time.sleep(0.1)
    workers.remove(conn, QUEUE_PREFIX, "gpu-box:41")
    assert "gpu-box:41" not in ui.get("/workers").get_data(as_text=True)


def test_sign_in_with_a_key_sees_exactly_that_keys_batches(
        make_app: Callable[..., Flask], images: list[str]) -> None:
    app = make_app(api_keys=("key-a", "key-b"), ui_live_cache_seconds=0)
    api = app.test_client()
    mine = submit(api, images, name="batch of a", headers={"Authorization": "Bearer key-a"})
    theirs = submit(api, images, name="batch of b", headers={"Authorization": "Bearer key-b"})
    their_job = batch_jobs_as(api, theirs, "key-b")[0]

    browser = app.test_client()
    assert browser.get("/").status_code == 302
    assert browser.get("/").location.startswith("/signin")
    assert browser.get("/ui/live/batches").status_code == 401
    assert browser.get(f"/ui/jobs/{their_job}/thumb").status_code == 401
    assert browser.post("/signin", data={"key": "wrong"}).status_code == 401
    signed = browser.post("/signin", data={"key": "key-a", "next": "/workers"})
    assert signed.status_code == 302 and signed.location == "/workers"
    assert "key-a" not in (signed.headers.get("Set-Cookie") or "")

    home = browser.get("/").get_data(as_text=True)
    assert "batch of a" in home and "batch of b" not in home
    assert browser.get(f"/batches/{mine}").status_code == 200
    assert browser.get(f"/batches/{theirs}").status_code == 404
    assert browser.get(f"/jobs/{their_job}").status_code == 404
    assert browser.get(f"/ui/jobs/{their_job}/thumb").status_code == 404
    assert browser.post(f"/jobs/{their_job}/cancel").status_code == 404
    assert browser.post(f"/batches/{theirs}/cancel").status_code == 404
    assert "batch of b" not in browser.get("/ui/live/batches").get_data(as_text=True)

    assert browser.post("/signout").status_code == 302
    assert browser.get("/").status_code == 302
    assert browser.post("/signin", data={"key": "key-a", "next": "//evil.example/"}) \
        .location == "/"


def batch_jobs_as(client: FlaskClient, batch_id: str, key: str) -> list[str]:
    reply = client.get(f"/v1/jobs?batch={batch_id}", headers={"Authorization": f"Bearer {key}"})
    return [j["id"] for j in reply.json["items"]]


def test_swagger_ui_and_its_code_come_from_the_api(client: FlaskClient) -> None:
    page = client.get("/v1/swagger").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(a.startswith("/v1/swagger-ui/") for a in assets), assets
    for asset in assets:
        reply = client.get(asset)
        assert reply.status_code == 200 and len(reply.data) > 1000, asset
    assert client.get("/v1/swagger-ui/index.j2").status_code == 404
    redoc = client.get("/v1/redoc")
    assert redoc.status_code == 302 and redoc.location.endswith("/v1/swagger")
    assert "cdn" not in client.get("/v1/docs").get_data(as_text=True).lower()


def test_dashboard_static_files_are_served_by_the_app(client: FlaskClient) -> None:
    home = client.get("/").get_data(as_text=True)
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', home):
        assert client.get(path).status_code == 200
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', home))



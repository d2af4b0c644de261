"""Jobs: submit, read, list page by page, cancel, retry, result and preview files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from api.context import state
from shared.models import Job, utcnow
from shared.spec import RenderParams
from shared.storage import atomic_write
from tests.api.conftest import image_bytes


def submit(client: FlaskClient, content: str, style: str, **extra: Any) -> Any:
    return client.post("/v1/jobs", json={"content": content, "styles": [style], **extra})


def set_job(app: Flask, job_id: str, **values: Any) -> None:
    """Play the worker's part: write the row directly."""
    with app.app_context(), state().engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(**values))


def test_create_and_get(client: FlaskClient, images: list[str],
                        queue: Callable[[], int]) -> None:
    content, style = images[:2]
    reply = client.post("/v1/jobs", json={
        "content": content, "styles": [{"image": style, "weight": 2}, images[2]],
        "params": {"size": 64, "optimizer": "adam"}, "priority": 3,
        "webhook_url": "https://example.com/hook"})
    assert reply.status_code == 202, reply.json
    job = reply.json
    assert reply.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["progress"] == 0 and job["eta_seconds"] is None
    assert job["styles"] == [{"image": style, "weight": 2.0}, {"image": images[2], "weight": 1.0}]
    assert job["params"] == RenderParams(size=64, optimizer="adam").to_dict()
    assert job["priority"] == 3 and job["webhook_url"] == "https://example.com/hook"
    assert job["links"]["cancel"] == f"/v1/jobs/{job['id']}/cancel"
    assert job["links"]["result"] is None and job["links"]["retry"] is None
    assert queue() == 1
    again = client.get(reply.headers["Location"])
    assert again.status_code == 200 and again.json == job


def test_progress_and_eta(app: Flask, client: FlaskClient, images: list[str]) -> None:
    job_id = submit(client, images[0], images[1]).json["id"]
    set_job(app, job_id, status="running", progress=0.25, scale=1, scale_count=3, iteration=40,
            started_at=utcnow() - timedelta(seconds=30), worker="gpu-1", attempts=1)
    job = client.get(f"/v1/jobs/{job_id}").json
    assert (job["status"], job["scale"], job["iteration"], job["worker"]) == (
        "running", 1, 40, "gpu-1")
    assert 85 <= job["eta_seconds"] <= 95  # 30 s for a quarter: about 90 s to go
    assert job["started_at"].endswith("+00:00")


def test_unknown_field_and_bad_values_name_the_field(client: FlaskClient,
                                                     images: list[str]) -> None:
    reply = submit(client, images[0], images[1], params={"size": -5, "sizee": 3}, colour=1)
    assert reply.status_code == 422
    fields = reply.json["error"]["fields"]
    assert set(fields) == {"params.size", "params.sizee", "colour"}
    assert fields["colour"] == ["Unknown field."]
    reply = client.post("/v1/jobs", json={"content": images[0],
                                          "styles": [{"image": images[1], "weight": 0}]})
    assert reply.status_code == 422 and "styles.0.weight" in reply.json["error"]["fields"]


def test_unknown_image_is_422_naming_the_field(client: FlaskClient, images: list[str],
                                               queue: Callable[[], int]) -> None:
    missing = "f" * 64
    reply = client.post("/v1/jobs", json={"content": images[0],
                                          "styles": [images[1], missing]})
    assert reply.status_code == 422
    assert list(reply.json["error"]["fields"]) == ["styles.1.image"]
    assert queue() == 0


def test_output_too_large_names_params_size(client: FlaskClient, images: list[str]) -> None:
    reply = submit(client, images[0], images[1], params={"size": 4000})  # 4000x3000 > 4 MP
    assert reply.status_code == 422
    assert "params.size" in reply.json["error"]["fields"]


def test_malformed_json_is_400(client: FlaskClient) -> None:
    reply = client.post("/v1/jobs", data="{nope", content_type="application/json")
    assert reply.status_code in (400, 422) and reply.is_json


def test_list_pages_with_filters(app: Flask, client: FlaskClient, images: list[str]) -> None:
    ids = [submit(client, images[0], images[1]).json["id"] for _ in range(7)]
    set_job(app, ids[2], status="failed", finished_at=utcnow())
    seen: list[str] = []
    url = "/v1/jobs?limit=3"
    pages = 0
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.json
        seen += [job["id"] for job in page.json["items"]]
        url = page.json["next"]
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == 7
    queued = client.get("/v1/jobs?status=queued&limit=4").json
    assert len(queued["items"]) == 4 and "status=queued" in queued["next"]
    rest = client.get(queued["next"]).json
    assert rest["next"] is None
    got = {job["id"] for job in queued["items"] + rest["items"]}
    assert got == set(ids) - {ids[2]}
    assert [j["id"] for j in client.get("/v1/jobs?status=failed").json["items"]] == [ids[2]]


def test_list_rejects_bad_parameters(client: FlaskClient) -> None:
    for query, name in (("status=sleeping", "status"), ("limit=0", "limit"),
                        ("limit=abc", "limit"), ("cursor=garbage!", "cursor"),
                        ("colour=red", "colour")):
        reply = client.get(f"/v1/jobs?{query}")
        assert reply.status_code == 422, (query, reply.json)
        assert name in reply.json["error"]["fields"], (query, reply.json)


def test_cancel_queued_running_and_finished(app: Flask, client: FlaskClient, images: list[str],
                                            ) -> None:
    queued, running, done = (submit(client, images[0], images[1]).json["id"] for _ in range(3))
    reply = client.post(f"/v1/jobs/{queued}/cancel")
    assert reply.status_code == 200 and reply.json["status"] == "canceled"
    assert reply.json["finished_at"] is not None and reply.json["links"]["retry"]

    set_job(app, running, status="running", worker="gpu-1", started_at=utcnow())
    reply = client.post(f"/v1/jobs/{running}/cancel")
    assert reply.status_code == 200 and reply.json["status"] == "cancel-requested"
    assert client.post(f"/v1/jobs/{running}/cancel").status_code == 200  # asking twice is fine

    set_job(app, done, status="succeeded", finished_at=utcnow(), progress=1.0)
    reply = client.post(f"/v1/jobs/{done}/cancel")
    assert reply.status_code == 409 and "succeeded" in reply.json["error"]["message"]
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 409
    assert client.post("/v1/jobs/nope/cancel").status_code == 404


def test_retry(app: Flask, client: FlaskClient, images: list[str],
               queue: Callable[[], int]) -> None:
    job_id = submit(client, images[0], images[1]).json["id"]
    assert queue() == 1
    reply = client.post(f"/v1/jobs/{job_id}/retry")
    assert reply.status_code == 409 and "queued" in reply.json["error"]["message"]
    set_job(app, job_id, status="failed", error="CUDA out of memory", attempts=3,
            finished_at=utcnow())
    assert client.get(f"/v1/jobs/{job_id}").json["error"] == "CUDA out of memory"
    reply = client.post(f"/v1/jobs/{job_id}/retry")
    assert reply.status_code == 202
    assert (reply.json["status"], reply.json["attempts"], reply.json["error"]) == (
        "queued", 0, None)
    assert queue() == 2


def test_result_409_then_file_with_etag_and_304(app: Flask, client: FlaskClient,
                                                images: list[str]) -> None:
    job_id = submit(client, images[0], images[1]).json["id"]
    reply = client.get(f"/v1/jobs/{job_id}/result")
    assert reply.status_code == 409 and "queued" in reply.json["error"]["message"]
    data = image_bytes(16, 16, "PNG", seed=9)
    with app.app_context():
        storage = state().storage
        stored = storage.relative(atomic_write(storage.result_path(job_id), data))
    set_job(app, job_id, status="succeeded", result_path=stored, progress=1.0,
            finished_at=utcnow())
    job = client.get(f"/v1/jobs/{job_id}").json
    assert job["links"]["result"] == f"/v1/jobs/{job_id}/result" and job["eta_seconds"] == 0
    reply = client.get(job["links"]["result"])
    assert reply.status_code == 200 and reply.data == data and reply.mimetype == "image/png"
    etag = reply.headers["ETag"]
    again = client.get(job["links"]["result"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""


def test_preview(app: Flask, client: FlaskClient, images: list[str]) -> None:
    job_id = submit(client, images[0], images[1]).json["id"]
    assert client.get(f"/v1/jobs/{job_id}/preview").status_code == 409  # exists, no preview
    assert client.get("/v1/jobs/0123/preview").status_code == 404
    data = image_bytes(8, 8, "JPEG")
    with app.app_context():
        storage = state().storage
        stored = storage.relative(atomic_write(storage.preview_path(job_id), data))
    set_job(app, job_id, status="running", preview_path=stored, worker="w", started_at=utcnow())
    reply = client.get(f"/v1/jobs/{job_id}/preview")
    assert reply.status_code == 200 and reply.data == data and reply.mimetype == "image/jpeg"
    assert reply.headers["Cache-Control"] == "no-cache"


def test_broker_down_fails_the_jobs_with_503(client: FlaskClient, images: list[str],
                                             monkeypatch: Any) -> None:
    def unreachable(_items: Any) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr("api.jobs.enqueue", unreachable)
    reply = submit(client, images[0], images[1])
    assert reply.status_code == 503 and reply.headers["Retry-After"]
    [job] = client.get("/v1/jobs").json["items"]
    assert job["status"] == "failed" and "redis is down" in job["error"]
    assert job["links"]["retry"]
    reply = client.post("/v1/batches", json={"contents": images[:2], "styles": images[2:3]})
    assert reply.status_code == 503
    assert len(client.get("/v1/jobs?status=failed").json["items"]) == 3


def test_job_no_worker_could_run_is_422_naming_the_field(
        make_app: Callable[..., Flask], images: list[str]) -> None:
    """With no worker published yet, settings.farm_memory_mb stands for the farm: 1 GiB
    cannot hold a 2000 px L-BFGS job (its history alone is larger), 64 MiB not even a model."""
    client = make_app(farm_memory_mb=1024).test_client()
    reply = submit(client, images[0], images[1], params={"size": 2000, "lbfgs_history": 1000})
    assert reply.status_code == 422
    [message] = reply.json["error"]["fields"]["params.size"]
    assert "memory" in message and "lbfgs_history" in message
    assert submit(client, images[0], images[1], params={"size": 64}).status_code == 202

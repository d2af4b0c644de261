"""/metrics (parsed with prometheus-client's own parser and checked against the database),
the contact sheet and the streamed zip of a batch."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_client
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from api import sheets
from cli.procs import Api
from shared import farmstats, workers
from shared.db import engine_for
from shared.models import Job
from shared.settings import Settings
from tests.api.conftest import QUEUE_PREFIX
from tests.api.dashboard_helpers import batch_jobs, finish
from tests.api.test_dashboard import submit


def scrape(client: FlaskClient) -> dict[str, dict[tuple, float]]:
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.content_type.startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(reply.get_data(as_text=True)):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(metrics_cache_seconds=0)


def test_metrics_match_the_database_and_redis(client: FlaskClient, app: Flask,
                                              images: list[str], redis_url: str,
                                              queue: Callable[[], int]) -> None:
    settings = app.extensions["stylefarm"].settings
    batch_id = submit(client, images, contents=4)
    urgent = client.post("/v1/jobs", json={"content": images[0], "styles": [{"image": images[1]}],
                                          "params": {"size": 48}, "priority": 5})
    assert urgent.status_code == 202
    jobs = [j["id"] for j in batch_jobs(client, batch_id)]
    finish(settings, jobs[0])
    finish(settings, jobs[1], outcome="failed")
    conn = redis_client.Redis.from_url(redis_url)
    for key in conn.scan_iter(f"{QUEUE_PREFIX}stats:*"):
        conn.delete(key)
    farmstats.observe(conn, QUEUE_PREFIX, "job_duration_seconds", 12.0, "succeeded")
    farmstats.observe(conn, QUEUE_PREFIX, "job_duration_seconds", 400.0, "succeeded")
    farmstats.observe(conn, QUEUE_PREFIX, "job_queue_wait_seconds", 0.3, "normal")
    farmstats.incr(conn, QUEUE_PREFIX, "webhook_deliveries", "ok", 3)
    farmstats.incr(conn, QUEUE_PREFIX, "webhook_failures", "retry")
    workers.publish(conn, QUEUE_PREFIX, "box:9", {"device": "cpu", "device_memory": 5000,
                                                  "it_per_s": 2.5, "job": jobs[2]}, ttl=60)
    try:
        metrics = scrape(client)
    finally:
        workers.remove(conn, QUEUE_PREFIX, "box:9")

    with engine_for(settings.effective_database_url).connect() as db:
        truth = {(s, p): n for s, p, n in db.execute(
            select(Job.status, Job.priority, func.count()).group_by(Job.status, Job.priority))}
    jobs_metric = metrics["stylefarm_jobs"]
    assert jobs_metric[(("queue", "normal"), ("status", "queued"))] == truth[("queued", 0)] == 2
    assert jobs_metric[(("queue", "high"), ("status", "queued"))] == truth[("queued", 5)] == 1
    assert jobs_metric[(("queue", "normal"), ("status", "succeeded"))] == 1
    assert jobs_metric[(("queue", "normal"), ("status", "failed"))] == 1
    assert sum(jobs_metric.values()) == sum(truth.values()) == 5

    depth = metrics["stylefarm_queue_depth"]
    assert depth[(("queue", "normal"),)] + depth[(("queue", "high"),)] == queue() == 5
    assert metrics["stylefarm_workers"][()] == 1
    assert metrics["stylefarm_worker_iterations_per_second"][
        (("device", "cpu"), ("worker", "box:9"))] == 2.5
    assert metrics["stylefarm_worker_device_memory_bytes"][
        (("device", "cpu"), ("worker", "box:9"))] == 5000
    durations = metrics["stylefarm_job_duration_seconds_bucket"]
    assert durations[(("le", "15.0"), ("outcome", "succeeded"))] == 1
    assert durations[(("le", "600.0"), ("outcome", "succeeded"))] == 2
    assert durations[(("le", "+Inf"), ("outcome", "succeeded"))] == 2
    assert metrics["stylefarm_job_duration_seconds_sum"][(("outcome", "succeeded"),)] == 412.0
    assert metrics["stylefarm_job_queue_wait_seconds_count"][(("queue", "normal"),)] == 1
    assert metrics["stylefarm_webhook_deliveries_total"][(("result", "ok"),)] == 3
    assert metrics["stylefarm_webhook_failures_total"][(("result", "retry"),)] == 1
    requests_seen = metrics["stylefarm_api_request_seconds_count"]
    assert requests_seen[(("method", "POST"), ("route", "/v1/batches"),
                          ("status", "202"))] >= 1


def test_job_counts_follow_every_change_and_survive_folding(
        client: FlaskClient, app: Flask, images: list[str]) -> None:
    """The triggers count inserts, status changes in bulk (cancel, retry) and deletes; a
    fold-up (after FOLD_AFTER_ROWS changes on SQLite) keeps the totals."""
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from shared import jobcounts
    from shared.models import JobAttempt, JobCountDelta

    settings = app.extensions["stylefarm"].settings
    engine = engine_for(settings.effective_database_url)

    def truth() -> dict[tuple[str, int], int]:
        with engine.connect() as db:
            return {(s, p): n for s, p, n in db.execute(
                select(Job.status, Job.priority, func.count())
                .group_by(Job.status, Job.priority))}

    batch_id = submit(client, images, contents=2 * jobcounts.FOLD_AFTER_ROWS // 3)
    client.post(f"/v1/batches/{batch_id}/cancel")
    one = batch_jobs(client, batch_id)[0]["id"]
    assert client.post(f"/v1/jobs/{one}/retry").status_code == 202
    finish(settings, one)
    with Session(engine) as session:
        assert jobcounts.counts(session) == truth()  # SQLite: folded up on the way
        jobcounts.fold(session)
        session.commit()
        rows = session.scalar(select(func.count()).select_from(JobCountDelta))
        assert rows == len(truth())  # one row per (status, priority) that has jobs
        assert jobcounts.counts(session) == truth()
        session.execute(delete(JobAttempt).where(JobAttempt.job_id == one))
        session.execute(delete(Job).where(Job.id == one))
        session.commit()
        assert jobcounts.counts(session) == truth()
    assert sum(v for k, v in scrape(client)["stylefarm_jobs"].items()) == sum(truth().values())


def test_metrics_jobs_count_is_cached_for_a_moment(make_app: Callable[..., Flask],
                                                   images: list[str]) -> None:
    client = make_app(metrics_cache_seconds=3600).test_client()
    assert sum(scrape(client)["stylefarm_jobs"].values()) == 0
    submit(client, images, contents=2)
    assert sum(scrape(client)["stylefarm_jobs"].values()) == 0  # the count of a moment ago


def test_request_latency_is_summed_over_gunicorn_worker_processes(
        settings: Settings, tmp_path: Path) -> None:
    """Two gunicorn workers, each answering some of the requests: one scrape counts all."""
    from shared.migrate import upgrade

    upgrade(settings.effective_database_url)
    shared_dir = tmp_path / "prometheus"
    shared_dir.mkdir()
    env = {**os.environ, "STYLEFARM_DATA_DIR": str(settings.data_dir),
           "DATABASE_URL": settings.effective_database_url, "REDIS_URL": settings.redis_url,
           "STYLEFARM_QUEUE_PREFIX": settings.queue_prefix,
           "PROMETHEUS_MULTIPROC_DIR": str(shared_dir)}
    api = Api(env, tmp_path / "api.log", workers=2)
    api.start()

    def healthz_seen() -> tuple[float, float]:
        reply = requests.get(f"{api.url}/metrics", timeout=60)
        [family] = [f for f in text_string_to_metric_families(reply.text)
                    if f.name == "stylefarm_api_request_seconds"]
        mine = [s for s in family.samples if s.labels.get("route") == "/healthz"]
        return (sum(s.value for s in mine if s.name.endswith("_count")),
                sum(s.value for s in mine if s.name.endswith("_sum")))

    try:
        before, _ = healthz_seen()  # the start-up probes
        sent = 60
        for _ in range(sent):  # a fresh connection each: gunicorn spreads them over workers
            assert requests.get(f"{api.url}/healthz", timeout=60).status_code == 200
        writers = {path.stem.rsplit("_", 1)[1] for path in shared_dir.glob("histogram_*.db")}
        assert len(writers) == 2, f"requests reached only the processes {writers}"
        for _ in range(10):  # whichever process answers the scrape: the same total
            count, seconds = healthz_seen()
            assert count == before + sent and seconds > 0
        fetch_sheet_through_the_cli(api.url, tmp_path)
    finally:
        api.stop()


def fetch_sheet_through_the_cli(url: str, tmp_path: Path) -> None:
    """`stylefarm fetch BATCH --sheet FILE` saves the sheet the API serves."""
    from cli.main import main
    from tests.api.conftest import image_bytes

    ids = [requests.post(f"{url}/v1/images", timeout=60,
                         files={"file": ("x.png", image_bytes(seed=n))}).json()["id"]
           for n in (1, 2)]
    batch = requests.post(f"{url}/v1/batches", timeout=60, json={
        "name": "sheet", "contents": ids, "styles": ids[:1], "params": {"size": 48}}).json()
    target = tmp_path / "sheet.png"
    assert main(["fetch", batch["id"], "--sheet", str(target), "--no-wait", "--api", url]) == 0
    assert target.read_bytes() == requests.get(f"{url}/v1/batches/{batch['id']}/sheet",
                                               timeout=60).content
    assert PILImage.open(target).size == (2 * 160, 160 + sheets.LABEL_PX)


def test_sheet_has_one_cell_per_job_and_is_cached_until_the_batch_changes(
        client: FlaskClient, app: Flask, images: list[str]) -> None:
    settings = app.extensions["stylefarm"].settings
    batch_id = submit(client, images, contents=5)
    jobs = [j["id"] for j in batch_jobs(client, batch_id)]
    finish(settings, jobs[0], seed=3)
    first = client.get(f"/v1/batches/{batch_id}/sheet?cell=64")
    assert first.status_code == 200 and first.content_type == "image/png"
    sheet = PILImage.open(io.BytesIO(first.data)).convert("RGB")
    columns, rows = 3, 2  # 5 cells: ceil(sqrt(5)) columns
    assert sheet.size == (columns * 64, rows * (64 + sheets.LABEL_PX))
    # The succeeded job's cell shows its result's colour; a queued one is grey.
    assert sheet.getpixel((32, 32)) == ((3 * 53) % 256, (3 * 97) % 256, 200)
    assert sheet.getpixel((64 + 32, 10)) == (225, 225, 232)
    again = client.get(f"/v1/batches/{batch_id}/sheet?cell=64",
                       headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    finish(settings, jobs[1], seed=4)
    changed = client.get(f"/v1/batches/{batch_id}/sheet?cell=64",
                         headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and changed.headers["ETag"] != first.headers["ETag"]
    assert len(list((settings.data_dir / "sheets").glob(f"{batch_id}-*.png"))) == 1
    assert client.get(f"/v1/batches/{batch_id}/sheet?cell=9999").status_code == 422
    assert client.get(f"/v1/batches/{batch_id}/sheet?cell=1.5").status_code == 422
    assert client.get("/v1/batches/0123456789abcdef0123456789abcdef/sheet").status_code == 404


def test_sheet_of_10_000_jobs_stays_within_its_pixel_bound() -> None:
    cell = sheets.cell_size(10_000, 256)
    side = 100 * cell, 100 * (cell + sheets.LABEL_PX)
    assert side[0] * side[1] <= sheets.MAX_SHEET_PIXELS and cell >= sheets.MIN_CELL


def test_archive_holds_every_result_and_a_manifest(client: FlaskClient, app: Flask,
                                                  images: list[str]) -> None:
    settings = app.extensions["stylefarm"].settings
    batch_id = submit(client, images, contents=4)
    jobs = [j["id"] for j in batch_jobs(client, batch_id)]
    results = {jobs[n]: finish(settings, jobs[n], seed=n) for n in range(3)}
    finish(settings, jobs[3], outcome="failed")
    reply = client.get(f"/v1/batches/{batch_id}/archive")
    assert reply.status_code == 200 and reply.content_type == "application/zip"
    assert reply.is_streamed
    archive = zipfile.ZipFile(io.BytesIO(reply.data))
    assert archive.testzip() is None
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["batch"] == batch_id
    assert [e["job"] for e in manifest["jobs"]] == jobs
    for entry in manifest["jobs"]:
        if entry["job"] in results:
            assert archive.read(entry["file"]) == results[entry["job"]]
            assert entry["attempts"][0]["scale_seconds"] == [[0, 1.5], [1, 2.25]]
            assert entry["params"]["size"] == 48 and entry["content"] in images
        else:
            assert entry["status"] == "failed" and entry["file"] is None
    assert len([n for n in archive.namelist() if n.startswith("results/")]) == 3
    assert client.get("/v1/batches/0123456789abcdef0123456789abcdef/archive").status_code == 404

"""The dashboard's figures from a real worker: attempt history with time per scale, the
worker's record, /metrics after a batch (checked against the database), the zip and the
sheet of what it rendered."""

from __future__ import annotations

import io
import json
import zipfile

from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Job, JobAttempt
from tests.queue.conftest import Farm


def metric_samples(farm: Farm) -> dict[str, dict[tuple, float]]:
    text = farm.client.get("/metrics").get_data(as_text=True)
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_a_rendered_batch_on_the_dashboard_metrics_zip_and_sheet(
        farm: Farm, images: dict[str, str]) -> None:
    before = metric_samples(farm)
    done_before = before.get("stylefarm_job_duration_seconds_count", {}).get(
        (("outcome", "succeeded"),), 0)
    body = {"name": "dash", "contents": [images["wide"], images["tall"]],
            "styles": [images["style1"]],
            "params": {"size": 48, "min_size": 32, "iterations": [3, 3]}}
    batch = farm.client.post("/v1/batches", json=body).get_json()
    jobs = [j["id"] for j in farm.client.get(f"/v1/jobs?batch={batch['id']}").get_json()["items"]]

    def worker_listed() -> bool:
        page = farm.client.get("/workers").get_data(as_text=True)
        return 'class="worker"' in page and "<td>cpu</td>" in page
    farm.wait_for(worker_listed, message="the worker never showed on /workers")
    for job_id in jobs:
        farm.wait_status(job_id, {"succeeded"})

    with Session(farm.db) as session:
        runs = session.scalars(select(JobAttempt).where(JobAttempt.job_id.in_(jobs))).all()
        scale_counts = dict(session.execute(select(Job.id, Job.scale_count)
                                            .where(Job.id.in_(jobs))).all())
        truth = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    assert sorted(r.job_id for r in runs) == sorted(jobs)
    for run in runs:
        assert run.outcome == "succeeded" and run.number == 1 and run.finished_at is not None
        assert [s for s, _ in run.scale_seconds] == list(range(scale_counts[run.job_id]))
        assert all(seconds > 0 for _, seconds in run.scale_seconds)
    page = farm.client.get(f"/jobs/{jobs[0]}").get_data(as_text=True)
    assert runs[0].worker in page and "succeeded" in page

    def counted() -> dict[str, dict[tuple, float]] | None:
        now = metric_samples(farm)
        seen = now.get("stylefarm_job_duration_seconds_count", {}).get(
            (("outcome", "succeeded"),), 0)
        return now if seen == done_before + 2 else None
    metrics = farm.wait_for(counted, message="job durations never reached /metrics")
    by_status: dict[str, float] = {}
    for labels, value in metrics["stylefarm_jobs"].items():
        by_status[dict(labels)["status"]] = by_status.get(dict(labels)["status"], 0) + value
    assert {k: v for k, v in by_status.items() if v} == {k: float(v) for k, v in truth.items()}
    assert metrics["stylefarm_job_queue_wait_seconds_count"][(("queue", "normal"),)] >= 2
    assert metrics["stylefarm_workers"][()] >= 1

    archive = zipfile.ZipFile(io.BytesIO(
        farm.client.get(f"/v1/batches/{batch['id']}/archive").data))
    manifest = json.loads(archive.read("manifest.json"))
    for entry in manifest["jobs"]:
        result = farm.storage.result_path(entry["job"]).read_bytes()
        assert archive.read(entry["file"]) == result
        assert [s for s, _ in entry["attempts"][0]["scale_seconds"]] == \
            list(range(scale_counts[entry["job"]]))
    sheet = PILImage.open(io.BytesIO(farm.client.get(
        f"/v1/batches/{batch['id']}/sheet?cell=40").data))
    assert sheet.size == (2 * 40, 40 + 14)  # two cells side by side

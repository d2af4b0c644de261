"""The farm end to end: API -> Redis -> Celery worker process -> engine -> database -> API."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from PIL import Image
from sqlalchemy import func, select

from shared.models import Job
from tests.queue.conftest import LEASE_S, Farm, picture
from worker.engine.images import METADATA_KEY

pytestmark = pytest.mark.slow


def test_batch_of_four_renders_every_job_at_its_size(farm: Farm, images: dict[str, str]) -> None:
    body = {"contents": [images["wide"], images["tall"]],
            "styles": [images["style1"], images["style2"]],
            "params": {"size": 40, "min_size": 32, "iterations": [3]}}
    reply = farm.client.post("/v1/batches", json=body)
    assert reply.status_code == 202, reply.get_json()
    batch_id = reply.get_json()["id"]
    batch = farm.wait_for(
        lambda: (b := farm.client.get(f"/v1/batches/{batch_id}").get_json())["finished"] and b,
        message="the batch never finished")
    assert batch["counts"]["succeeded"] == 4, batch
    jobs = farm.client.get(f"/v1/jobs?batch={batch_id}").get_json()["items"]
    assert len(jobs) == 4
    sizes = {images["wide"]: (40, 30), images["tall"]: (29, 40)}
    for job in jobs:
        assert job["attempts"] == 1 and job["progress"] == 1.0
        result = farm.client.get(job["links"]["result"])
        assert result.status_code == 200
        with Image.open(io.BytesIO(result.data)) as png:
            assert png.size == sizes[job["content"]]
            made = json.loads(png.text[METADATA_KEY])  # how it was made travels with it
        assert made["job"] == job["id"] and made["content"] == job["content"]
        assert made["styles"] == job["styles"] and made["params"] == job["params"]


def test_cancel_running_job_stops_it_and_queued_job_never_starts(
        farm: Farm, images: dict[str, str]) -> None:
    long_job = farm.submit(images["wide"], images["style1"], size=64, iterations=[100000])
    queued = farm.submit(images["tall"], images["style1"], size=40)
    farm.wait_for(lambda: farm.job(long_job)["links"]["preview"],
                  message="the long job never wrote a preview")
    preview = farm.client.get(f"/v1/jobs/{long_job}/preview")
    assert preview.status_code == 200
    assert Image.open(io.BytesIO(preview.data)).format == "JPEG"
    assert farm.client.post(f"/v1/jobs/{queued}/cancel").status_code == 200
    assert farm.job(queued)["status"] == "canceled"

    asked = time.monotonic()
    assert farm.client.post(f"/v1/jobs/{long_job}/cancel").status_code == 200
    stopped = farm.wait_status(long_job, {"canceled"})
    took = time.monotonic() - asked
    assert took < 5, f"cancel took {took:.1f} s"
    assert stopped["links"]["result"] is None
    assert not farm.storage.result_path(long_job).exists()

    # The canceled queued job's message is consumed and dropped: it never starts.
    marker = farm.submit(images["tall"], images["style2"], size=32)
    farm.wait_status(marker, {"succeeded"})
    never = farm.job(queued)
    assert never["status"] == "canceled"
    assert never["attempts"] == 0 and never["started_at"] is None


def test_failed_job_has_actionable_error_and_retry_runs_it(
        farm: Farm, images: dict[str, str]) -> None:
    data = picture(48, 36, 5)
    content = farm.upload(data)
    path = farm.storage.image_path(content)
    path.write_bytes(data[:60])  # the stored file got truncated (a disk fault, say)
    job_id = farm.submit(content, images["style1"], size=32)
    failed = farm.wait_status(job_id, {"failed", "succeeded"})
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"content image {content[:12]}… could not be decoded")

    path.write_bytes(data)
    reply = farm.client.post(f"/v1/jobs/{job_id}/retry")
    assert reply.status_code in (200, 202), reply.get_json()
    done = farm.wait_status(job_id, {"failed", "succeeded"})
    assert done["status"] == "succeeded", done
    assert done["error"] is None and done["attempts"] == 1


class Receiver(BaseHTTPRequestHandler):
    """Fails the first POST of each delivery id with 500, accepts the next ones."""

    calls: ClassVar[list[tuple[float, dict]]] = []
    failed_once: ClassVar[set[str]] = set()

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.calls.append((time.monotonic(), payload))
        first = payload["delivery_id"] not in Receiver.failed_once
        Receiver.failed_once.add(payload["delivery_id"])
        self.send_response(500 if first else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.calls, Receiver.failed_once = [], set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhooks_are_retried_with_backoff(
        farm: Farm, images: dict[str, str], receiver: str) -> None:
    body = {"contents": [images["wide"]], "styles": [images["style1"], images["style2"]],
            "params": {"size": 32, "min_size": 32, "iterations": [2]},
            "webhook_url": receiver}
    batch_id = farm.client.post("/v1/batches", json=body).get_json()["id"]
    single = farm.client.post("/v1/jobs", json={
        "content": images["tall"], "styles": [images["style1"]], "webhook_url": receiver,
        "params": {"size": 32, "min_size": 32, "iterations": [2]}}).get_json()["id"]

    def delivered(event: str, key: str, value: str) -> list[tuple[float, dict]]:
        return [(t, p) for t, p in Receiver.calls if p["event"] == event and p[key] == value]

    farm.wait_for(lambda: len(delivered("job.finished", "job_id", single)) >= 2,
                  message="the job webhook was not retried")
    farm.wait_for(lambda: len(delivered("batch.finished", "batch_id", batch_id)) >= 2,
                  message="the batch webhook was not retried")
    (t1, first), (t2, second) = delivered("job.finished", "job_id", single)[:2]
    assert first == second and first["status"] == "succeeded"
    assert first["result_url"].endswith(f"/v1/jobs/{single}/result")
    assert t2 - t1 >= 0.4  # the backoff (0.5 s for the first retry)
    time.sleep(1.5)
    batch_calls = delivered("batch.finished", "batch_id", batch_id)
    assert len(batch_calls) == 2, "the batch was announced more than once"
    assert batch_calls[0][1]["counts"] == {"succeeded": 2}


def test_worker_killed_mid_job_is_run_again_exactly_once(
        farm: Farm, images: dict[str, str]) -> None:
    job_id = farm.submit(images["wide"], images["style2"], size=32, iterations=[40])
    # Killed before half its iterations, whatever the machine's speed: it must not finish first.
    first = farm.wait_for(lambda: (j := farm.job(job_id))["status"] == "running"
                          and (j["iteration"] or 0) >= 2 and j["progress"] <= 0.5 and j,
                          message="the job never ran")
    farm.worker.kill()
    time.sleep(LEASE_S + 0.5)
    still = farm.job(job_id)
    assert still["status"] == "running" and still["attempts"] == 1  # nobody ran it yet
    farm.worker.start()
    done = farm.wait_status(job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", (done["error"], farm.worker.output())
    assert done["attempts"] == 2
    assert done["worker"] != first["worker"]
    results = list(farm.storage.result_path(job_id).parent.glob(f"{job_id}*"))
    assert [p.name for p in results] == [f"{job_id}.png"]
    with farm.db.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Job).where(Job.id == job_id)) == 1
    time.sleep(LEASE_S)
    assert farm.job(job_id)["status"] == "succeeded"  # no later delivery undid it


def test_worker_killed_after_a_scale_resumes_there_with_the_same_picture(
        farm: Farm, images: dict[str, str]) -> None:
    params = {"size": 64, "min_size": 32, "iterations": [4, 4, 150], "seed": 5, "init": "noise"}
    job_id = farm.submit(images["wide"], images["style2"], **params)
    checkpoint = farm.storage.checkpoint_path(job_id)
    farm.wait_for(lambda: (j := farm.job(job_id))["status"] == "running" and j["scale"] == 2,
                  message="the job never reached its last scale")
    assert checkpoint.exists()  # written after scale 1 (0-based), before scale 2 began
    farm.worker.kill()
    time.sleep(LEASE_S + 0.5)
    farm.worker.start()
    done = farm.wait_status(job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", (done["error"], farm.worker.output())
    assert done["attempts"] == 2
    assert f"job {job_id}: resuming after scale 2 of 3" in farm.worker.output()
    assert not checkpoint.exists()  # dropped once the job finished

    again = farm.submit(images["wide"], images["style2"], **params)  # never interrupted
    assert farm.wait_status(again, {"succeeded", "failed"})["status"] == "succeeded"

    def pixels(job: str) -> bytes:
        with Image.open(io.BytesIO(farm.client.get(f"/v1/jobs/{job}/result").data)) as image:
            return image.tobytes()

    assert pixels(job_id) == pixels(again)


def test_higher_priority_queues_are_consumed_first(farm: Farm, images: dict[str, str]) -> None:
    blocker = farm.submit(images["wide"], images["style1"], size=64, iterations=[100000])
    farm.wait_status(blocker, {"running"})
    ids = {}
    for priority in (-5, 0, 5):  # submitted low first: order of submission must not win
        reply = farm.client.post("/v1/jobs", json={
            "content": images["tall"], "styles": [images["style2"]], "priority": priority,
            "params": {"size": 32, "min_size": 32, "iterations": [1]}})
        ids[priority] = reply.get_json()["id"]
    farm.client.post(f"/v1/jobs/{blocker}/cancel")
    done = [farm.wait_status(ids[p], {"succeeded"}) for p in (5, 0, -5)]
    starts = [job["started_at"] for job in done]
    assert starts == sorted(starts), "high, normal, low should start in that order"

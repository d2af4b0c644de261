"""/metrics: the farm in Prometheus's text format, from the API alone (one scrape target).

- Request latency by route, method and status: a prometheus-client Histogram. Under
  gunicorn every worker process writes it to PROMETHEUS_MULTIPROC_DIR (set by
  `stylefarm api`), and a scrape, whichever process takes it, merges them all.
- Jobs by status and priority: the sum of job_count_deltas, which database triggers keep
  (shared.jobcounts), reused for `metrics_cache_seconds` by every scrape this process
  answers.
- Queue depth per queue (LLEN), live workers' iterations per second and device memory
  (their records, shared.workers), job duration and queue wait histograms and webhook
  counters (shared.farmstats): all from Redis, where the workers put them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.cache import cache
from api.context import State, state
from shared import farmstats, jobcounts, workers
from shared.models import Status
from shared.queue import PRIORITY_LEVELS, WEBHOOK_LEVEL, level_for

blp = Blueprint("metrics", __name__)

REQUEST_SECONDS = Histogram(
    "stylefarm_api_request_seconds", "API request latency, by route and status",
    ["route", "method", "status"], registry=None,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def register(app: Flask) -> None:
    app.register_blueprint(blp)
    app.after_request(_observe)


def _observe(response: Response) -> Response:
    started = g.get("request_started")
    if started is not None and request.endpoint != "metrics.scrape":
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        REQUEST_SECONDS.labels(rule, request.method, str(response.status_code)).observe(
            time.perf_counter() - started)
    return response


@blp.get("/metrics")
def scrape() -> Response:
    registry = CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REQUEST_SECONDS)
    registry.register(FarmCollector(state()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def job_counts(st: State) -> list[tuple[str, int, int]]:
    """(status, priority, count) for every job, from the trigger-kept deltas
    (shared.jobcounts): a few rows whatever the number of jobs; cached a moment."""
    def count() -> list[tuple[str, int, int]]:
        with st.sessions() as session:
            found = jobcounts.counts(session)
            session.commit()
        return [(status, priority, n) for (status, priority), n in found.items()]
    return cache("metrics-jobs", st.settings.metrics_cache_seconds).get("all", count)


class FarmCollector:
    """Figures read at scrape time from the database and Redis."""

    def __init__(self, st: State) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        yield self._jobs()
        conn = self.st.redis()
        prefix = self.st.settings.queue_prefix
        try:
            yield from self._redis_figures(conn, prefix)
        except Exception:  # Redis away: the database's figures are still worth a scrape
            up = GaugeMetricFamily("stylefarm_redis_up", "whether Redis answered this scrape")
            up.add_metric([], 0)
            yield up

    def _jobs(self) -> Metric:
        family = GaugeMetricFamily("stylefarm_jobs", "jobs by status and priority queue",
                                   labels=["status", "queue"])
        totals: dict[tuple[str, str], int] = {(s.value, level): 0 for s in Status
                                              for level in PRIORITY_LEVELS}
        for status, priority, count in job_counts(self.st):
            totals[(status, level_for(priority))] = (
                totals.get((status, level_for(priority)), 0) + count)
        for (status, level), count in sorted(totals.items()):
            family.add_metric([status, level], count)
        return family

    def _redis_figures(self, conn: Any, prefix: str) -> Iterator[Metric]:
        depth = GaugeMetricFamily("stylefarm_queue_depth", "messages waiting in each queue",
                                  labels=["queue"])
        pipe = conn.pipeline(transaction=False)
        levels = (*PRIORITY_LEVELS, WEBHOOK_LEVEL)
        for level in levels:
            pipe.llen(f"{prefix}{level}")
        for level, length in zip(levels, pipe.execute(), strict=True):
            depth.add_metric([level], length)
        yield depth
        yield from self._workers(conn, prefix)
        for name in farmstats.HISTOGRAMS:
            label = "outcome" if name == "job_duration_seconds" else "queue"
            family = HistogramMetricFamily(f"stylefarm_{name}", _HELP[name], labels=[label])
            for value, series in sorted(farmstats.read_histogram(conn, prefix, name).items()):
                family.add_metric([value], series["buckets"], series["sum"])
            yield family
        for name in farmstats.COUNTERS:
            family = CounterMetricFamily(f"stylefarm_{name}", _HELP[name], labels=["result"])
            for value, count in sorted(farmstats.read_counter(conn, prefix, name).items()):
                family.add_metric([value], count)
            yield family

    def _workers(self, conn: Any, prefix: str) -> Iterator[Metric]:
        live = workers.live(conn, prefix)
        count = GaugeMetricFamily("stylefarm_workers", "live render workers")
        count.add_metric([], len(live))
        speed = GaugeMetricFamily("stylefarm_worker_iterations_per_second",
                                  "iterations per second of each busy worker",
                                  labels=["worker", "device"])
        memory = GaugeMetricFamily("stylefarm_worker_device_memory_bytes",
                                   "device memory in use (resident memory on a CPU)",
                                   labels=["worker", "device"])
        for record in live:
            labels = [record["name"], str(record.get("device"))]
            if record.get("it_per_s") is not None:
                speed.add_metric(labels, record["it_per_s"])
            if record.get("device_memory") is not None:
                memory.add_metric(labels, record["device_memory"])
        yield from (count, speed, memory)


_HELP = {
    "job_duration_seconds": "wall time of each run of a job on a worker, by outcome",
    "job_queue_wait_seconds": "time from submission to a job's first start, by queue",
    "webhook_deliveries": "webhook POSTs answered with success",
    "webhook_failures": "webhook POSTs that failed (result: retry or given_up)",
}

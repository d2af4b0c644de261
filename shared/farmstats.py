"""Worker-side figures for /metrics, kept in Redis so that the API's one scrape target
reports them: histograms (job duration, queue wait) and counters (webhook deliveries).

A histogram is one Redis hash: a field per bucket (cumulative counts are made at read
time), "sum" and "count". HINCRBY/HINCRBYFLOAT are atomic, so any number of worker
processes add to the same hash; nothing is lost when one of them dies, and nothing of
this is on the render loop (one pipeline per finished job).
"""

from __future__ import annotations

import math
from typing import Any

# Seconds: a 48 px test job takes a second, a 4K render hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200, 21600, math.inf)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, math.inf)
HISTOGRAMS = {"job_duration_seconds": DURATION_BUCKETS, "job_queue_wait_seconds": WAIT_BUCKETS}
COUNTERS = ("webhook_deliveries", "webhook_failures")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}stats:{name}"


def _bucket_name(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def observe(conn: Any, prefix: str, name: str, value: float, labels: str = "") -> None:
    """Add one observation to histogram `name` (under the label value `labels`)."""
    bound = next(b for b in HISTOGRAMS[name] if value <= b)
    key = _key(prefix, name)
    pipe = conn.pipeline(transaction=False)
    pipe.hincrby(key, f"{labels}|{_bucket_name(bound)}", 1)
    pipe.hincrbyfloat(key, f"{labels}|sum", value)
    pipe.hincrby(key, f"{labels}|count", 1)
    pipe.execute()


def incr(conn: Any, prefix: str, name: str, labels: str = "", by: int = 1) -> None:
    conn.hincrby(_key(prefix, name), labels, by)


def read_histogram(conn: Any, prefix: str, name: str) -> dict[str, dict[str, Any]]:
    """{label value: {"buckets": [(bound, cumulative count), ...], "sum": s}}."""
    raw = conn.hgetall(_key(prefix, name))
    series: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        labels, _, part = field.rpartition("|")
        series.setdefault(labels, {})[part] = float(value)
    out = {}
    for labels, parts in series.items():
        total, buckets = 0.0, []
        for bound in HISTOGRAMS[name]:
            total += parts.get(_bucket_name(bound), 0.0)
            buckets.append((_bucket_name(bound), total))
        out[labels] = {"buckets": buckets, "sum": parts.get("sum", 0.0)}
    return out


def read_counter(conn: Any, prefix: str, name: str) -> dict[str, float]:
    return {(k.decode() if isinstance(k, bytes) else k): float(v)
            for k, v in conn.hgetall(_key(prefix, name)).items()}

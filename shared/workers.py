"""Live workers: each render worker publishes a small record in Redis; readers list them.

A record (host, device, device memory, current job, iterations per second, last beat) is
one Redis string with a TTL of the lease, plus the worker's name in a sorted set scored by
its last beat. A worker that dies stops refreshing it and vanishes after the lease, the
same rule by which its job is taken over. Publishing is a thread's job, never the render
loop's: the loop only updates a dict in memory.
"""

from __future__ import annotations

import json
import time
from typing import Any

MAX_WORKERS_LISTED = 1000


def _keys(prefix: str) -> tuple[str, str]:
    return f"{prefix}workers", f"{prefix}worker:"


def publish(conn: Any, prefix: str, name: str, record: dict[str, Any], ttl: float) -> None:
    """Write `record` for worker `name`, alive for `ttl` seconds unless written again."""
    index, item = _keys(prefix)
    now = time.time()
    body = json.dumps({**record, "name": name, "beat_at": now})
    pipe = conn.pipeline(transaction=False)
    pipe.set(item + name, body, px=max(1, int(ttl * 1000)))
    pipe.zadd(index, {name: now})
    pipe.zremrangebyscore(index, "-inf", now - ttl)
    pipe.execute()


def remove(conn: Any, prefix: str, name: str) -> None:
    """A worker that stops cleanly leaves at once, not a lease later."""
    index, item = _keys(prefix)
    pipe = conn.pipeline(transaction=False)
    pipe.delete(item + name)
    pipe.zrem(index, name)
    pipe.execute()


def live(conn: Any, prefix: str) -> list[dict[str, Any]]:
    """Every worker whose record has not expired, by name, with `beat_age` in seconds."""
    index, item = _keys(prefix)
    names = [n.decode() if isinstance(n, bytes) else n
             for n in conn.zrange(index, 0, MAX_WORKERS_LISTED - 1)]
    if not names:
        return []
    now = time.time()
    out = []
    for raw in conn.mget([item + name for name in names]):
        if raw is None:
            continue  # expired: the worker is gone
        record = json.loads(raw)
        record["beat_age"] = max(0.0, now - record.get("beat_at", now))
        out.append(record)
    return sorted(out, key=lambda r: r["name"])

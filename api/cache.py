"""A tiny time-bounded cache, per process, for replies many clients ask for at once.

/metrics's count of jobs and the dashboard's live fragments are the same for every
caller within a second or two; computing them once per interval per process is what
keeps 100 open dashboards (or a scraper per Prometheus replica) off the database.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from threading import Lock
from typing import Any

MAX_ENTRIES = 512


class TtlCache:
    """Values computed by `make` and reused for `ttl` seconds; at most MAX_ENTRIES kept.

    One computation per key at a time: a caller that arrives while another computes the
    same key waits for that result rather than running the query a second time.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = Lock()
        self._key_locks: dict[Hashable, Lock] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        hit = self._fresh(key)
        if hit is not None:
            return hit[1]
        with self._lock:
            key_lock = self._key_locks.setdefault(key, Lock())
        with key_lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit[1]
            value = make()
            with self._lock:
                self._items[key] = (time.monotonic(), value)
                self._items.move_to_end(key)
                while len(self._items) > MAX_ENTRIES:
                    old, _ = self._items.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value

    def _fresh(self, key: Hashable) -> tuple[float, Any] | None:
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit
        return None


def cache(name: str, ttl: float) -> TtlCache:
    """The app's cache called `name` (created on first use)."""
    from api.context import state

    caches = state().caches
    if name not in caches:
        caches[name] = TtlCache(ttl)
    return caches[name]

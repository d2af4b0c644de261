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

    One computation per key at a time, and nobody waits for it who need not: while one
    caller recomputes an expired value, the others get the previous one (a second old).
    Only the very first callers of a key wait. Waiting would park every thread of a
    gunicorn worker behind one slow page, and the status polls queued behind them.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = Lock()
        self._key_locks: dict[Hashable, Lock] = {}

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._items.get(key)
            key_lock = self._key_locks.setdefault(key, Lock())
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        if hit is not None and not key_lock.acquire(blocking=False):
            return hit[1]  # being recomputed: the previous value meanwhile
        if hit is None:
            key_lock.acquire()
        try:
            with self._lock:
                hit = self._items.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            value = make()
            with self._lock:
                self._items[key] = (time.monotonic(), value)
                self._items.move_to_end(key)
                while len(self._items) > MAX_ENTRIES:
                    old, _ = self._items.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value
        finally:
            key_lock.release()


def cache(name: str, ttl: float) -> TtlCache:
    """The app's cache called `name` (created on first use)."""
    from api.context import state

    caches = state().caches
    if name not in caches:
        caches[name] = TtlCache(ttl)
    return caches[name]

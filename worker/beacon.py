"""The worker's heartbeat record in Redis (shared.workers), published from a thread.

The render loop's progress callback only sets fields of `Beacon.state` (a dict write per
recorded progress, once a second at most); this thread publishes the record every third
of the lease, with the device's memory read here, so the dashboard's workers page and
/metrics cost the render nothing. Also home of the per-job figures that go to Redis for
/metrics (queue wait, duration), each one pipeline per job, off the loop.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from shared import farmstats, workers

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger(__name__)


class Beacon:
    """Publishes this worker process's record until stopped."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.state: dict[str, Any] = {"job": None, "it_per_s": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beacon", daemon=True)

    @cached_property
    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(self.runtime.settings.effective_redis_url,
                                    socket_timeout=5, socket_connect_timeout=5)

    @property
    def prefix(self) -> str:
        return self.runtime.settings.queue_prefix

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            workers.remove(self.redis, self.prefix, self.runtime.name)
        except Exception:
            log.debug("could not remove the worker record", exc_info=True)

    def record(self) -> dict[str, Any]:
        device, memory, total = self._device()
        return {"host": socket.gethostname(), "device": device, "device_memory": memory,
                "device_memory_total": total, **self.state}

    def publish(self) -> None:
        workers.publish(self.redis, self.prefix, self.runtime.name, self.record(),
                        ttl=self.runtime.settings.lease_seconds)

    def _run(self) -> None:
        while True:
            try:
                self.publish()
            except Exception:  # Redis away: the next beat tries again
                log.debug("worker record not published", exc_info=True)
            if self._stop.wait(self.runtime.heartbeat_interval):
                return

    def _device(self) -> tuple[str, int | None, int | None]:
        """The device's name and its memory in use / in all (bytes); the process's resident
        memory on the CPU. Nothing is touched before the model's thread picked the device."""
        if not self.runtime.warmed:
            return "starting", None, None
        device = self.runtime.device
        if getattr(device, "type", "cpu") == "cuda":
            import torch

            index = device.index or 0
            return (f"{device} {torch.cuda.get_device_name(index)}",
                    int(torch.cuda.memory_reserved(index)),
                    int(torch.cuda.get_device_properties(index).total_memory))
        return "cpu", _resident_bytes(), None

    # ------------------------------------------------------------- figures per job

    def observe(self, name: str, value: float, labels: str = "") -> None:
        try:
            farmstats.observe(self.redis, self.prefix, name, value, labels)
        except Exception:
            log.debug("figure %s not recorded", name, exc_info=True)


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            import os

            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class Speed:
    """Iterations per second over the last few seconds, from the progress callback."""

    def __init__(self) -> None:
        self._mark: tuple[float, int] | None = None
        self.value: float | None = None

    def update(self, done: int) -> float | None:
        now = time.monotonic()
        if self._mark is None:
            self._mark = (now, done)
        elif now - self._mark[0] >= 2.0:
            then, before = self._mark
            if done >= before:
                self.value = round((done - before) / (now - then), 3)
            self._mark = (now, done)
        return self.value

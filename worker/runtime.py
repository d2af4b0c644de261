"""Per-process state of a render worker: device, model, database engine, name.

Celery's prefork pool forks children from a parent that must never have touched
CUDA (a CUDA context does not survive fork), so everything GPU-related happens in
`init_process`, connected to `worker_process_init`, i.e. in the child that runs
jobs. A farm runs one worker process per GPU (`CUDA_VISIBLE_DEVICES` set by
`stylefarm worker --gpus`), so inside a process the device is simply "the GPU".

The VGG-19 model is loaded once per process (the engine's `load_vgg` cache), on a
thread started here, so the child reports "up" to its parent at once: Celery kills a
child that does not report within `worker_proc_alive_timeout`, and loading the model
took longer than that on a loaded machine, so every new child was killed, for ever. A
job that arrives before the model is ready waits for that thread (`Runtime.warm`).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from shared import transitions
from shared.db import engine_for, session_scope
from shared.models import Status
from shared.settings import Settings, get_settings
from shared.storage import Storage

if TYPE_CHECKING:
    from worker.beacon import Beacon

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What one worker process keeps between jobs."""

    settings: Settings = field(default_factory=get_settings)
    _warm_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _warmed: bool = False

    @cached_property
    def name(self) -> str:
        """Who owns a claimed job: unique per process, so a restarted child is a new owner."""
        return f"{socket.gethostname()}:{os.getpid()}"

    @cached_property
    def db(self) -> Engine:
        return engine_for(self.settings.effective_database_url)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.data_dir)

    @cached_property
    def device(self) -> Any:
        """The torch device; first touched in the child (after fork), never in the parent."""
        from worker.engine.device import pick_device, prepare

        device = pick_device(self.settings.device)
        prepare(device)
        return device

    @cached_property
    def started_in(self) -> float:
        """Seconds from this process's creation (fork) to now, first asked in
        `init_process`; NaN where /proc cannot say."""
        try:
            ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
            boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text()
                        .splitlines() if line.startswith("btime"))
            return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError, IndexError, StopIteration):
            return math.nan

    @property
    def heartbeat_interval(self) -> float:
        """A third of the lease: two missed beats still leave the job ours."""
        return max(0.2, self.settings.lease_seconds / 3)

    @property
    def warmed(self) -> bool:
        return self._warmed

    @cached_property
    def beacon(self) -> Beacon:
        """This process's record for the workers page and /metrics (worker.beacon)."""
        from worker.beacon import Beacon

        return Beacon(self)

    def warm(self) -> None:
        """Pick the device and load the model, once: the first caller loads, the others
        (a job arriving meanwhile) wait for it rather than load a second copy."""
        with self._warm_lock:
            if self._warmed:
                return
            import torch

            from worker.engine.vgg import load_vgg

            began = time.monotonic()
            torch.zeros(1, device=self.device)  # creates the CUDA context, on a GPU
            ready = time.monotonic()
            load_vgg("max", str(self.device))
            self._warmed = True
            self.publish_memory()
            log.info("warm: process start %.2f s, device %.2f s, model %.2f s",
                     self.started_in, ready - began, time.monotonic() - ready)

    def publish_memory(self) -> None:
        """Tell the API what a render here may use (shared/memory.py), so it refuses at
        submit a job no worker could run. The figure rides in this worker's heartbeat
        record (worker/beacon.py), so it expires with the worker; published at once here,
        then with every beat. Best effort: without it the API falls back on
        settings.farm_memory_mb, and this worker still checks every job itself."""
        from shared.memory import RECORD_FIELD, WorkerMemory
        from worker.engine.device import activation_bytes, host_budget, memory_budget

        record = WorkerMemory(memory_budget(self.device),
                              activation_bytes(self.device), self.device.type,
                              host_budget(self.device))
        self.beacon.state[RECORD_FIELD] = record.to_dict()
        try:
            self.beacon.publish()
        except Exception:
            log.warning("could not publish this worker's memory", exc_info=True)

    def warm_in_background(self) -> None:
        threading.Thread(target=self._warm_quietly, name="warm", daemon=True).start()

    def _warm_quietly(self) -> None:
        try:
            self.warm()
        except Exception:  # a missing model shows up in the job's error, with context
            log.exception("could not warm the engine")

    def release_device_memory(self) -> None:
        """After a CUDA out-of-memory error: hand the allocator's cached blocks back, so
        the next job starts from an empty device rather than the failed job's leftovers."""
        if getattr(self.device, "type", "cpu") != "cuda":
            return
        import gc

        import torch

        gc.collect()  # the failed render's tensors, held by reference cycles
        torch.cuda.empty_cache()


_runtime: Runtime | None = None


def current() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def init_process(**_: object) -> None:
    """worker_process_init: a fresh runtime in the child, pools not shared with the parent.

    Returns at once (the child must report to its parent within seconds); the model loads
    on a thread meanwhile."""
    global _runtime
    engine_for.cache_clear()  # connections opened before fork belong to the parent
    _runtime = Runtime()
    _runtime.started_in  # noqa: B018 - fixed now: fork to init, not fork to the first job
    if not os.environ.get("STYLEFARM_NO_WARM"):  # a webhook-only worker needs no model
        _runtime.warm_in_background()
        _runtime.beacon.start()  # a render worker shows on the workers page
        atexit.register(_runtime.beacon.stop)


class Heartbeat:
    """Beats for a running job on a thread, and tells the job when to stop.

    Progress records beat too, but one iteration at 4K can take longer than the
    lease; this thread keeps a long iteration from looking like a dead worker.
    `canceled` / `lost` are checked by the progress callback every iteration.
    """

    def __init__(self, runtime: Runtime, job_id: str) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.canceled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def observe(self, status: Status | None) -> None:
        """Take note of a status read by a beat or a progress record."""
        if status is None:
            self.lost.set()
        elif status == Status.CANCEL_REQUESTED:
            self.canceled.set()

    def _run(self) -> None:
        while not self._stop.wait(self.runtime.heartbeat_interval):
            try:
                with session_scope(self.runtime.db) as session:
                    status = transitions.heartbeat(session, self.job_id, self.runtime.name)
                self.observe(status)
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)
            if self.lost.is_set():
                return

    @contextmanager
    def running(self) -> Iterator[Heartbeat]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)

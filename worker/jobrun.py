"""Running one claimed job: load its inputs, call the engine, record what happened.

The task that calls this has already claimed the job (a guarded UPDATE), so this
process owns it until it finishes, or until its heartbeat goes stale and another
worker takes over; every write below is guarded by that ownership, so a worker
that lost the job writes nothing that counts (its result file, written atomically
to the same path, is byte-for-byte the other worker's job anyway).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from marshmallow import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError

from shared import attempts, transitions
from shared.db import session_scope
from shared.memory import DoesNotFit
from shared.models import Job
from shared.spec import RenderParams
from shared.storage import atomic_write
from worker import engine_adapter
from worker.beacon import Speed
from worker.runtime import Heartbeat, Runtime

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    LOST = "lost"  # another worker owns the job now: nothing was written


class Stop(Exception):
    """Raised from the progress callback to end the render within the current iteration."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


@dataclass
class JobInputs:
    """What the engine needs, read from the job's row (so the session can close)."""

    job_id: str
    content: str
    styles: list[tuple[str, float]]
    init: str | None
    params: dict[str, Any]
    attempt_id: int | None = None  # this run's row in job_attempts (shared.attempts)

    @classmethod
    def of(cls, job: Job, attempt_id: int | None = None) -> JobInputs:
        return cls(job.id, job.content_image_id,
                   [(s["image"], float(s.get("weight", 1.0))) for s in job.styles],
                   job.init_image_id, dict(job.params), attempt_id)


T = TypeVar("T")
# What a client sees while its database restarts: the connection is dropped mid-use.
DATABASE_GONE = (OperationalError, InterfaceError)
DATABASE_TRIES = 6


def with_database(action: Callable[[], T], what: str) -> T:
    """Run `action` (one transaction), again on a fresh connection if the database dropped
    it. A restart takes seconds; the job's outcome must not be lost to it, nor become a
    failure the user is told to retry. After the last try the error propagates, the job's
    lease runs out and the reconciler hands it to another worker."""
    for attempt in range(DATABASE_TRIES - 1):
        try:
            return action()
        except DATABASE_GONE:
            log.warning("%s: database unavailable, trying again", what, exc_info=True)
            time.sleep(min(0.5 * 2**attempt, 8.0))
    return action()


class Reporter:
    """The engine's progress callback: throttled progress records, previews, stop checks."""

    def __init__(self, runtime: Runtime, job_id: str, heartbeat: Heartbeat,
                 attempt_id: int | None = None) -> None:
        self.runtime = runtime
        self.job_id = job_id
        self.heartbeat = heartbeat
        self.attempt_id = attempt_id
        self._last_record = 0.0
        self._last_preview = time.monotonic()
        self.scales = ScaleClock()
        self._iterations = 0
        self._speed = Speed()

    def __call__(self, event: engine_adapter.Progress) -> None:
        self.check()
        self._iterations += 1
        if self.scales.at(event.scale):
            self._save_scale_times()
        now = time.monotonic()
        if now - self._last_record < self.runtime.settings.progress_interval:
            return
        self._last_record = now
        self.runtime.beacon.state.update(  # published by the beacon's thread, not here
            job=self.job_id, it_per_s=self._speed.update(self._iterations))
        preview = None
        if (now - self._last_preview >= self.runtime.settings.preview_interval
                and event.preview is not None):
            self._last_preview = now
            preview = self._save_preview(event)
        try:
            with session_scope(self.runtime.db) as session:
                status = transitions.record_progress(
                    session, self.job_id, self.runtime.name, progress=event.progress,
                    scale=event.scale, scale_count=event.scale_count,
                    iteration=event.iteration, loss=_finite(event.loss()),
                    preview_path=preview,
                )
        except DATABASE_GONE:  # progress is written every second; skip this one
            log.warning("progress of job %s not recorded: database unavailable", self.job_id)
            return
        self.heartbeat.observe(status)
        self.check()

    def _save_scale_times(self) -> None:
        if self.attempt_id is None:
            return
        try:
            with session_scope(self.runtime.db) as session:
                attempts.record_scales(session, self.attempt_id, self.scales.done)
        except DATABASE_GONE:  # history, not state: the outcome's write carries it again
            log.warning("scale times of job %s not recorded", self.job_id)

    def check(self) -> None:
        if self.heartbeat.lost.is_set():
            raise Stop(Outcome.LOST)
        if self.heartbeat.canceled.is_set():
            raise Stop(Outcome.CANCELED)

    def _save_preview(self, event: engine_adapter.Progress) -> str | None:
        try:
            image = event.preview()
            image.thumbnail((512, 512))
            path = self.runtime.storage.preview_path(self.job_id)
            atomic_write(path, lambda handle: image.save(handle, "JPEG", quality=85))
            return self.runtime.storage.relative(path)
        except Exception:  # a preview is a nicety; never fail a job over one
            log.warning("preview for job %s failed", self.job_id, exc_info=True)
            return None


class ScaleClock:
    """Seconds per scale, from the scale index of each progress event."""

    def __init__(self) -> None:
        self.done: list[list[float]] = []
        self._scale: int | None = None
        self._since = time.monotonic()

    def at(self, scale: int) -> bool:
        """Note the scale of an event; True when it closed the previous scale."""
        if scale == self._scale:
            return False
        closed = self.close()
        self._scale = scale
        return closed

    def close(self) -> bool:
        now = time.monotonic()
        closed = self._scale is not None
        if closed:
            self.done.append([self._scale, round(now - self._since, 3)])
        self._since = now
        self._scale = None
        return closed


def run(runtime: Runtime, inputs: JobInputs) -> Outcome:
    """Render a claimed job and record the outcome; returns what was recorded.

    Once the job has finished, whatever way, its checkpoint goes; a lost job's belongs
    to the worker that holds the job now.
    """
    began = time.monotonic()
    reporter_box: list[Reporter] = []
    outcome = _run(runtime, inputs, reporter_box)
    if outcome is not Outcome.LOST:
        engine_adapter.drop_checkpoint(runtime, inputs.job_id)
    runtime.beacon.state.update(job=None, it_per_s=None)
    scales = reporter_box[0].scales if reporter_box else ScaleClock()
    scales.close()
    _close_attempt(runtime, inputs, outcome, scales.done)
    runtime.beacon.observe("job_duration_seconds", time.monotonic() - began, outcome.value)
    return outcome


def _close_attempt(runtime: Runtime, inputs: JobInputs, outcome: Outcome,
                   scale_seconds: list[list[float]]) -> None:
    if inputs.attempt_id is None:
        return
    attempt_id = inputs.attempt_id

    def write() -> None:
        with session_scope(runtime.db) as session:
            attempts.finish(session, attempt_id, outcome.value, scale_seconds)

    try:
        with_database(write, "attempt history")
    except DATABASE_GONE:
        log.warning("attempt history of job %s not recorded", inputs.job_id)


def _run(runtime: Runtime, inputs: JobInputs, reporter_box: list[Reporter]) -> Outcome:
    heartbeat = Heartbeat(runtime, inputs.job_id)
    reporter = Reporter(runtime, inputs.job_id, heartbeat, inputs.attempt_id)
    reporter_box.append(reporter)
    try:
        with heartbeat.running():
            image = render(runtime, inputs, reporter)
            reporter.check()
            path = save_result(runtime, inputs, image)
    except Stop as stop:
        if stop.outcome is Outcome.CANCELED:
            with_database(lambda: _finish_canceled(runtime, inputs.job_id), "cancel")
        log.info("job %s stopped: %s", inputs.job_id, stop.outcome)
        return stop.outcome
    except DATABASE_GONE:
        # Not the job's fault: leave it running; its lease runs out and the reconciler
        # hands it to a worker (this one, often), which resumes from the checkpoint.
        log.warning("job %s left to the reconciler: database unavailable", inputs.job_id,
                    exc_info=True)
        return Outcome.LOST
    except Exception as exc:
        message = user_message(exc, inputs, runtime)
        out_of_memory = engine_adapter.is_out_of_memory(exc)
        log.exception("job %s failed: %s", inputs.job_id, message)
    else:
        return record_success(runtime, inputs, path)
    if out_of_memory:  # outside the except block: the traceback no longer holds the tensors
        runtime.release_device_memory()
    done = with_database(lambda: _fail(runtime, inputs.job_id, message), "failure")
    return Outcome.FAILED if done else Outcome.LOST


def _finish_canceled(runtime: Runtime, job_id: str) -> None:
    with session_scope(runtime.db) as session:
        transitions.finish_canceled(session, job_id, runtime.name)


def _fail(runtime: Runtime, job_id: str, message: str) -> bool:
    with session_scope(runtime.db) as session:
        return bool(transitions.fail(session, job_id, runtime.name, message))


def _succeed(runtime: Runtime, job_id: str, relative_path: str) -> bool:
    with session_scope(runtime.db) as session:
        return bool(transitions.succeed(session, job_id, runtime.name, relative_path))


def record_success(runtime: Runtime, inputs: JobInputs, path: Any) -> Outcome:
    relative = runtime.storage.relative(path)
    done = with_database(lambda: _succeed(runtime, inputs.job_id, relative), "success")
    if done:
        log.info("job %s: succeeded", inputs.job_id)  # once per job, whatever the faults
    return Outcome.SUCCEEDED if done else Outcome.LOST


class ResultWriteError(RuntimeError):
    pass


def save_result(runtime: Runtime, inputs: JobInputs, image: Any) -> Any:
    """PNG, atomically: a reader (or a second worker's write) never sees half a file.

    The PNG says how it was made (job, images, parameters), as the CLI's results do, so
    a result copied out of the farm can still be traced and rendered again.
    """
    from worker.engine.images import save_image

    path = runtime.storage.result_path(inputs.job_id, "png")
    metadata = {"job": inputs.job_id, "content": inputs.content,
                "styles": [{"image": image_id, "weight": weight}
                           for image_id, weight in inputs.styles],
                "init_image": inputs.init, "params": inputs.params}
    try:
        save_image(image, path, metadata)
    except OSError as exc:
        raise ResultWriteError(f"could not write the result to storage ({exc.strerror or exc});"
                               " retry the job once the storage volume has room") from exc
    return path


def render(runtime: Runtime, inputs: JobInputs, reporter: Reporter) -> Any:
    params = RenderParams.from_dict(inputs.params)
    runtime.warm()  # the model, if the child's warm-up thread has not loaded it yet
    return engine_adapter.render(runtime, inputs, params, reporter)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def user_message(exc: BaseException, inputs: JobInputs, runtime: Runtime) -> str:
    """A failure as something the user can act on; the traceback goes to the log."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, engine_adapter.ImageError | DoesNotFit):
        return str(exc)
    if isinstance(exc, ResultWriteError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return f"invalid render parameters: {exc.messages}"
    if isinstance(exc, SoftTimeLimitExceeded):
        from shared.queue import time_limits

        return (f"the render took longer than the limit of {time_limits(runtime.settings)[0]}"
                " s; try a smaller size or fewer iterations")
    if engine_adapter.is_out_of_memory(exc):
        where = ""
        try:
            params = RenderParams.from_dict(inputs.params)
            if params.width and params.height:
                where = f" at {params.width}×{params.height}"
            else:
                where = f" at {params.size} px on the long side"
        except ValidationError:
            pass
        return (f"out of {engine_adapter.memory_kind(runtime)} memory{where}: the render needs "
                "more memory than its worker has; try a smaller size (retrying the same job "
                "will fail again)")
    return f"the render failed ({type(exc).__name__}: {exc}); retry it, or report the job id"


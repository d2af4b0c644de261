"""The Celery tasks: thin on purpose. Claim the job, call the engine, record the outcome.

Start a worker with `stylefarm worker` (or `celery -A worker.tasks worker -Q ...`).

Idempotency (Celery's "Tasks" guide: with `acks_late`, a task may run more than
once) comes from the database, not the broker: `transitions.claim` is a guarded
UPDATE, so of two deliveries of one job exactly one runs it; a delivery of a
finished (or canceled) job is acknowledged and dropped; a delivery while another
live worker runs the job (BUSY) is retried a lease later, so if that worker then
dies, this message is what finishes the job.
"""

from __future__ import annotations

import logging

from celery import Task, bootsteps
from celery.signals import worker_process_init
from sqlalchemy.exc import DBAPIError

from shared import attempts, farmstats, transitions
from shared.db import session_scope
from shared.models import Job, aware, utcnow
from shared.queue import RENDER_TASK, WEBHOOK_TASK, enqueue_webhooks, get_app, level_for
from shared.settings import get_settings
from shared.transitions import Claim
from shared.webhooks import owed, resolve_target
from worker import jobrun, runtime, webhooks

log = logging.getLogger(__name__)
DB_RETRY_S = 5
app = get_app()
worker_process_init.connect(runtime.init_process, weak=False)


class Reconcile(bootsteps.StartStopStep):
    """The reconciler (shared.reconcile) on a thread of the worker's main process.

    Every deployment runs workers, so every deployment reconciles; a Redis lease lets
    one pass run at a time however many workers there are. It starts after the pool, so
    the first children are forked before the thread exists, and it holds no database
    connection between passes, so a child forked later inherits none.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.loop = None

    def start(self, parent: object) -> None:
        from shared.reconcile import ReconcileLoop

        if get_settings().reconcile_interval > 0:
            self.loop = ReconcileLoop()
            self.loop.start()

    def stop(self, parent: object) -> None:
        if self.loop is not None:
            self.loop.stop()


app.steps["worker"].add(Reconcile)


@app.task(name=RENDER_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True)
def render(self: Task, job_id: str) -> str:
    """Run job `job_id` if it still needs running; returns what happened (for the log)."""
    rt = runtime.current()
    settings = rt.settings
    try:
        with session_scope(rt.db) as session:
            claim = transitions.claim(session, job_id, rt.name,
                                      lease_seconds=settings.lease_seconds,
                                      max_attempts=settings.max_attempts)
            inputs = None
            if claim.outcome == Claim.RUN:
                job = session.get(Job, job_id)
                attempt_id = attempts.start(session, job_id, claim.attempt, rt.name)
                inputs = jobrun.JobInputs.of(job, attempt_id)
                if claim.attempt == 1:
                    waited = (utcnow() - aware(job.created_at)).total_seconds()
                    rt.beacon.observe("job_queue_wait_seconds", max(0.0, waited),
                                      level_for(job.priority))
    except DBAPIError as exc:
        # The database is away: keep the message (a new one, later) rather than lose the job.
        log.warning("job %s: database unavailable (%s); retrying", job_id, exc)
        raise self.retry(countdown=DB_RETRY_S, max_retries=None) from exc
    if claim.outcome == Claim.BUSY:
        # Another worker holds the job; look again once its lease could have run out.
        raise self.retry(countdown=settings.lease_seconds, max_retries=None)
    if inputs is None:
        log.info("job %s: %s, nothing to do", job_id, claim.outcome)
        if claim.outcome == Claim.SKIP:
            notify(rt, job_id)  # a job failed here for too many attempts still announces it
        return str(claim.outcome)
    log.info("job %s: attempt %d on %s", job_id, claim.attempt, rt.name)
    outcome = jobrun.run(rt, inputs)
    if outcome is not jobrun.Outcome.LOST:
        notify(rt, job_id)
    return str(outcome)


def notify(rt: runtime.Runtime, job_id: str) -> None:
    """Queue the webhooks a finished job owes; a broker hiccup must not fail the job."""
    try:
        with session_scope(rt.db) as session:
            enqueue_webhooks(owed(session, [job_id], rt.settings), app=app)
    except Exception:
        log.exception("could not queue webhooks for job %s", job_id)


@app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Task, url: str, payload: dict) -> None:
    """POST a payload; on failure retry with exponential backoff (base · 2^n seconds)."""
    settings = runtime.current().settings
    # Resolved once, checked, and posted to that very address (no second DNS answer).
    address, problem = resolve_target(url, allow_private=settings.webhook_private)
    if problem:  # not a failure that a retry could mend
        log.error("webhook %s to %s refused: %s", payload.get("delivery_id"), url, problem)
        return
    try:
        webhooks.post(url, payload, address)
        _count_webhook("webhook_deliveries", "ok")
    except Exception as exc:
        _count_webhook("webhook_failures", "retry" if self.request.retries
                       < settings.webhook_max_retries else "given_up")
        if self.request.retries >= settings.webhook_max_retries:
            log.error("webhook %s to %s given up: %s", payload.get("delivery_id"), url, exc)
            return
        delay = settings.webhook_backoff * 2 ** self.request.retries
        log.warning("webhook %s to %s failed (%s); retry in %.1f s",
                    payload.get("delivery_id"), url, exc, delay)
        raise self.retry(countdown=delay, max_retries=settings.webhook_max_retries) from exc


def _count_webhook(name: str, labels: str) -> None:
    """Webhook figures for /metrics (shared.farmstats); never fails a delivery."""
    try:
        rt = runtime.current()
        farmstats.incr(rt.beacon.redis, rt.settings.queue_prefix, name, labels)
    except Exception:
        log.debug("webhook figure not recorded", exc_info=True)

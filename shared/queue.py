"""The Celery app, its configuration, and how jobs are put on the queue. No task bodies.

The broker carries only "job X may be run now"; the database says what X is and
whether it still needs running (see `shared.transitions`). That split is what
makes redelivery safe, and Celery's delivery guarantees are tuned for it here:

* `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only
  after its task returns, so a worker that dies mid-render (OOM, SIGKILL, lost
  node) leaves the message to be delivered again. The task is idempotent (a
  guarded claim in the database), so a second delivery of a finished job is a no-op.
* `worker_prefetch_multiplier = 1`: a GPU worker holds one job at a time; jobs
  waiting in Redis can go to whichever GPU frees up first.
* Redis `visibility_timeout` longer than any job: an unacknowledged message is
  handed out again only after that long, so a slow render is never run twice,
  while a dead worker's job still comes back. Time limits sit below it.
* No result backend: results and status live in the database.
* Priorities as separate queues ("{prefix}high", "{prefix}normal", "{prefix}low"),
  consumed in that order (`queue_order_strategy = "priority"`): a list per
  priority is O(1) per message, where Redis "priority steps" would not be strict.

The API imports this module (never the worker): it sends tasks by name.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr
from kombu import Queue

from shared.settings import Settings, get_settings

RENDER_TASK = "stylefarm.render"
WEBHOOK_TASK = "stylefarm.webhook"
PRIORITY_LEVELS = ("high", "normal", "low")
WEBHOOK_LEVEL = "webhooks"
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def level_for(priority: int) -> str:
    """A job's priority (an integer, 0 by default) as a queue level: >0 high, <0 low."""
    if priority > 0:
        return "high"
    if priority < 0:
        return "low"
    return "normal"


def queue_name(level: str, settings: Settings | None = None) -> str:
    return f"{(settings or get_settings()).queue_prefix}{level}"


def render_queues(settings: Settings | None = None) -> list[str]:
    """Render queues in the order workers consume them: high before normal before low."""
    return [queue_name(level, settings) for level in PRIORITY_LEVELS]


def worker_queues(settings: Settings | None = None) -> list[str]:
    """What a GPU worker listens to: webhooks first (cheap, delivered between jobs), renders."""
    return [queue_name(WEBHOOK_LEVEL, settings), *render_queues(settings)]


def time_limits(settings: Settings) -> tuple[int, int]:
    """(soft, hard) seconds for a job: as configured, but below the visibility timeout,
    so a job is killed before its message could be handed to a second worker."""
    hard = min(settings.job_hard_time_limit, settings.effective_visibility_timeout - 1)
    return min(settings.job_soft_time_limit, hard - 1), hard


def make_celery(settings: Settings | None = None) -> Celery:
    """A configured Celery app for `settings` (the environment's by default)."""
    settings = settings or get_settings()
    visibility = settings.effective_visibility_timeout
    soft, hard = time_limits(settings)
    app = Celery("stylefarm", broker=settings.effective_redis_url, set_as_current=False)
    queues = worker_queues(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_time_limit=hard,
        task_soft_time_limit=soft,
        task_queues=[Queue(name, routing_key=name) for name in queues],
        task_default_queue=queue_name("normal", settings),
        task_routes={
            WEBHOOK_TASK: {"queue": queue_name(WEBHOOK_LEVEL, settings)},
        },
        task_create_missing_queues=False,
        broker_transport_options={
            "visibility_timeout": visibility,
            "queue_order_strategy": "priority",
            # Sweep for a dead worker's messages every few seconds (only matters once the
            # visibility timeout has passed; cheap: one ZRANGE).
            "unacked_restore_interval": max(1, min(10, visibility // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_proc_alive_timeout=settings.child_start_timeout,
        stylefarm_queue_prefix=settings.queue_prefix,
    )
    return app


@lru_cache(maxsize=1)
def _app() -> Celery:
    return make_celery()


def get_app() -> Celery:
    """The process-wide app, configured from the environment on first use."""
    return _app()


def enqueue_jobs(
    items: Sequence[tuple[str, int]], *, app: Celery | None = None, batch_size: int = 2000
) -> None:
    """Queue one render message per (job id, priority), after the jobs are committed."""
    app = app or get_app()
    prefix = app.conf.stylefarm_queue_prefix
    send_many(app, RENDER_TASK, [(f"{prefix}{level_for(priority)}", (job_id,))
                                 for job_id, priority in items], batch_size=batch_size)


def enqueue_webhooks(items: Sequence[tuple[str, dict]], *, app: Celery | None = None) -> None:
    """Queue one delivery per (url, payload): a separate task, so retries never hold a GPU."""
    app = app or get_app()
    queue = f"{app.conf.stylefarm_queue_prefix}{WEBHOOK_LEVEL}"
    send_many(app, WEBHOOK_TASK, [(queue, (url, payload)) for url, payload in items])


def send_many(app: Celery, task: str, messages: Sequence[tuple[str, tuple]],
              batch_size: int = 2000) -> None:
    """Send `task` once per (queue, args), as `send_task` would, but thousands a second.

    `send_task` in a loop costs ~300 µs a message (10,000 jobs: 3 s, over the API's
    budget). Here Celery builds one protocol-2 message (`amqp.as_task_v2`, so headers
    stay whatever this Celery version sends), serialised once per queue with
    placeholders; each message is that text with its own ids and arguments filled in,
    LPUSHed the way kombu's Redis transport would (`_put` on the anonymous exchange: the
    list named after the queue), up to `batch_size` messages per LPUSH, all in one
    pipeline round trip. Workers cannot tell these messages from `send_task`'s (a test
    compares).
    """
    if not messages:
        return
    template = _template(app, task)
    texts: dict[str, str] = {}
    pending: dict[str, list[str]] = {}
    embed = json.dumps(template.body[2])
    with app.connection_for_write() as conn:
        pipe = conn.default_channel.client.pipeline(transaction=False)
        for queue, args in messages:
            text = texts.get(queue)
            if text is None:
                text = texts[queue] = _message_text(template.headers, app.thread_oid, queue)
                pending[queue] = []
            body = f"[{json.dumps(list(args))}, {{}}, {embed}]".encode()
            pending[queue].append(text
                                  .replace(_TASK_ID, str(uuid.uuid4()))
                                  .replace(_BODY, base64.b64encode(body).decode())
                                  .replace(_ARGSREPR, json.dumps(argsrepr(app, args))[1:-1])
                                  .replace(_DELIVERY_TAG, str(uuid.uuid4())))
            if len(pending[queue]) == batch_size:
                pipe.lpush(queue, *pending[queue])  # one LPUSH of many = that many, in order
                pending[queue] = []
        for queue, texts_left in pending.items():
            if texts_left:
                pipe.lpush(queue, *texts_left)
        pipe.execute()


# Placeholders in a message's JSON text, one per value that differs between messages.
_TASK_ID, _BODY, _ARGSREPR, _DELIVERY_TAG = "<<task-id>>", "<<body>>", "<<args>>", "<<tag>>"


def _message_text(headers: dict, reply_to: str, queue: str) -> str:
    """The JSON of one message to `queue` (kombu's Redis envelope), with placeholders."""
    return json.dumps({
        "body": _BODY,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {**headers, "id": _TASK_ID, "root_id": _TASK_ID,
                    "argsrepr": _ARGSREPR, "kwargsrepr": "{}"},
        "properties": {
            "correlation_id": _TASK_ID,
            "reply_to": reply_to,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": _DELIVERY_TAG,
        },
    })


def argsrepr(app: Celery, args: tuple) -> str:
    """The `argsrepr` header Celery would send (what `celery inspect` and logs show)."""
    return saferepr(args, app.amqp.argsrepr_maxsize, maxlevels=app.conf.task_repr_maxlevels)


def _template(app: Celery, task: str) -> Any:
    """The protocol-2 message Celery would send for `task` (ids and arguments aside)."""
    return app.amqp.as_task_v2("0", task, args=(), kwargs={}, origin=_ORIGIN,
                               ignore_result=None)


def warm(app: Celery) -> None:
    """Pay enqueue's first-use costs now (~0.4 s: kombu's transport, the message
    template, a broker connection), so a server's first batch does not."""
    _template(app, RENDER_TASK)
    with app.connection_for_write() as conn:  # one try: a broker that is down raises now
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)

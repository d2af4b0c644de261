"""enqueue_jobs builds its messages itself (for speed): they must be what Celery sends."""

from __future__ import annotations

import base64
import json
import uuid

import redis

from shared.queue import RENDER_TASK, enqueue_jobs, make_celery
from shared.settings import Settings


def test_batch_messages_match_send_task_and_go_to_their_priority_queue(redis_url: str) -> None:
    prefix = f"enq-{uuid.uuid4().hex[:6]}."
    app = make_celery(Settings().with_(redis_url=redis_url, queue_prefix=prefix))
    client = redis.Redis.from_url(redis_url)
    try:
        app.send_task(RENDER_TASK, args=("reference",), queue=f"{prefix}normal")
        [reference] = [json.loads(m) for m in client.lrange(f"{prefix}normal", 0, -1)]
        client.delete(f"{prefix}normal")

        enqueue_jobs([("a" * 32, 3), ("b" * 32, 0), ("c" * 32, -2), ("d" * 32, 0)], app=app,
                     batch_size=3)
        lists = {level: [json.loads(m) for m in client.lrange(f"{prefix}{level}", 0, -1)]
                 for level in ("high", "normal", "low")}
        assert {k: len(v) for k, v in lists.items()} == {"high": 1, "normal": 2, "low": 1}
        ours = lists["high"][0]
        assert ours.keys() == reference.keys()
        assert ours["headers"].keys() == reference["headers"].keys()
        assert ours["properties"].keys() == reference["properties"].keys()
        assert ours["headers"]["task"] == RENDER_TASK
        assert ours["properties"]["delivery_info"] == {"exchange": "",
                                                       "routing_key": f"{prefix}high"}
        body = json.loads(base64.b64decode(ours["body"]))
        assert body[0] == ["a" * 32] and body[1] == {}
        assert body[2] == json.loads(base64.b64decode(reference["body"]))[2]
        ids = [m["headers"]["id"] for ms in lists.values() for m in ms]
        assert len(set(ids)) == 4  # a task id per message
    finally:
        client.delete(*(f"{prefix}{level}" for level in ("high", "normal", "low")))

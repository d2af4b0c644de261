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

        enqueue_jobs([("a" * 32, 3), ("b" * 32, 0), ("c" * 32, -2), ("d" * 32, 0),
                      ("e" * 32, 0)], app=app, batch_size=2)
        lists = {level: [json.loads(m) for m in client.lrange(f"{prefix}{level}", 0, -1)]
                 for level in ("high", "normal", "low")}
        assert {k: len(v) for k, v in lists.items()} == {"high": 1, "normal": 3, "low": 1}
        # kombu pops from the tail: first queued, first consumed, across LPUSH chunks
        consumed = [json.loads(base64.b64decode(m["body"]))[0][0][0]
                    for m in reversed(lists["normal"])]
        assert consumed == ["b", "d", "e"]
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
        assert ours["headers"]["argsrepr"] == repr(("a" * 32,))
        assert ours["headers"]["root_id"] == ours["properties"]["correlation_id"] \
            == ours["headers"]["id"]
        messages = [m for ms in lists.values() for m in ms]
        assert len({m["headers"]["id"] for m in messages}) == 5  # a task id per message
        assert len({m["properties"]["delivery_tag"] for m in messages}) == 5
        assert not any("<<" in json.dumps(m) for m in messages)  # every placeholder filled
    finally:
        client.delete(*(f"{prefix}{level}" for level in ("high", "normal", "low")))

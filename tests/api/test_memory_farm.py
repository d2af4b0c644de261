"""The API's farm memory check trusts only live workers: a worker's memory rides in its
heartbeat record (shared/workers.py) and expires with it. Against the real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import redis as redis_client
from flask import Flask

from api.farm import farm_workers
from shared import workers
from shared.memory import RECORD_FIELD, WorkerMemory
from shared.settings import Settings
from tests.api.test_jobs import submit
from worker.beacon import Beacon

GIB = 2**30
BIG = WorkerMemory(80 * GIB, 2, "cuda")
# 2000x1500 with a 100-pair L-BFGS history (7.5 GB of it): over the 1 GiB stand-in, within
# 80 GiB.
HEAVY = {"size": 2000, "lbfgs_history": 100}


def _conn(settings: Settings) -> redis_client.Redis:
    return redis_client.Redis.from_url(settings.effective_redis_url)


def _publish(settings: Settings, name: str, memory: WorkerMemory | None, ttl: float) -> None:
    record = {"host": "test", "device": memory.device if memory else "starting"}
    if memory is not None:
        record[RECORD_FIELD] = memory.to_dict()
    workers.publish(_conn(settings), settings.queue_prefix, name, record, ttl=ttl)


def _clear(settings: Settings) -> None:
    conn = _conn(settings)
    for record in workers.live(conn, settings.queue_prefix):
        workers.remove(conn, settings.queue_prefix, record["name"])


def test_dead_workers_memory_no_longer_counts(
        settings: Settings, make_app: Callable[..., Flask], images: list[str]) -> None:
    """A big worker that stopped beating: a lease later its memory is gone, so a job only
    it could run gets the 422 of the stand-in (1 GiB); while it beats, the job is taken."""
    _clear(settings)
    client = make_app(farm_memory_mb=1024).test_client()
    assert submit(client, images[0], images[1], params=HEAVY).status_code == 422

    _publish(settings, "alive", BIG, ttl=30)
    assert farm_workers(settings) == [BIG]
    assert submit(client, images[0], images[1], params=HEAVY).status_code == 202
    _clear(settings)

    _publish(settings, "dying", BIG, ttl=0.3)
    assert farm_workers(settings) == [BIG]
    time.sleep(0.5)  # its lease runs out without a beat
    assert farm_workers(settings) == []
    reply = submit(client, images[0], images[1], params=HEAVY)
    assert reply.status_code == 422
    [message] = reply.json["error"]["fields"]["params.size"]
    assert "memory" in message


def test_old_hash_entries_and_workers_without_memory_are_not_trusted(
        settings: Settings) -> None:
    """The hash earlier versions wrote (kept for ever) is not read; a live worker still
    loading its model (no memory in its record yet) does not count either."""
    _clear(settings)
    conn = _conn(settings)
    conn.hset(f"{settings.queue_prefix}worker_memory", "ghost", BIG.to_json())
    try:
        _publish(settings, "loading", None, ttl=30)
        assert farm_workers(settings) == []
        assert farm_workers(settings.with_(farm_memory_mb=512)) == [
            WorkerMemory(512 * 2**20, 4, "cuda", host_budget=0)]
    finally:
        conn.delete(f"{settings.queue_prefix}worker_memory")
        _clear(settings)


def test_beacon_publishes_the_memory_and_takes_it_away_on_stop(settings: Settings) -> None:
    """What a worker does: Runtime.publish_memory puts its figure in the beacon's state,
    every beat re-publishes it, and a clean stop removes it at once."""
    _clear(settings)
    runtime = SimpleNamespace(settings=settings, name="beacon-test", warmed=False,
                              heartbeat_interval=10.0)
    beacon = Beacon(runtime)  # type: ignore[arg-type]
    beacon.state[RECORD_FIELD] = BIG.to_dict()
    beacon.publish()
    assert farm_workers(settings) == [BIG]
    beacon.stop()
    assert farm_workers(settings) == []

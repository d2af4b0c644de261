"""What the farm's workers can run: the memory each published (shared/memory.py).

Read at every submit (one Redis round trip), so a worker that joins with a bigger GPU
widens what the API accepts at once. Until any worker has published, the setting
`farm_memory_mb` stands for the farm; when that is 0 too, the API does not check.
"""

from __future__ import annotations

import logging

from shared.memory import WorkerMemory, workers_key
from shared.settings import Settings

log = logging.getLogger(__name__)


def farm_workers(settings: Settings) -> list[WorkerMemory]:
    """The published workers, else the setting's stand-in (fp32: the cautious width)."""
    workers: list[WorkerMemory] = []
    try:
        import redis

        client = redis.Redis.from_url(settings.effective_redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        workers = [WorkerMemory.from_json(v)
                   for v in client.hvals(workers_key(settings.queue_prefix))]
    except Exception:  # no Redis: the queueing step reports that; memory is not checked
        log.warning("could not read the workers' memory", exc_info=True)
    if not workers and settings.farm_memory_mb:
        workers = [WorkerMemory(settings.farm_memory_mb * 2**20, 4, "cuda")]
    return workers

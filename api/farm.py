"""What the farm's workers can run: the memory each live worker published (shared/memory.py).

Read at every submit (two Redis round trips: the live workers' records), so a worker that
joins with a bigger GPU widens what the API accepts at once, and one that dies stops
counting when its heartbeat record expires (a lease after its last beat). Until a live
worker has published, the setting `farm_memory_mb` stands for the farm; when that is 0
too, the API does not check.
"""

from __future__ import annotations

import logging

from shared import workers as live_workers
from shared.memory import WorkerMemory, live_worker_memory
from shared.settings import Settings

log = logging.getLogger(__name__)


def farm_workers(settings: Settings) -> list[WorkerMemory]:
    """The live workers' memory, else the setting's stand-in (fp32: the cautious width)."""
    workers: list[WorkerMemory] = []
    try:
        import redis

        client = redis.Redis.from_url(settings.effective_redis_url, socket_timeout=2,
                                      socket_connect_timeout=2)
        workers = live_worker_memory(live_workers.live(client, settings.queue_prefix))
    except Exception:  # no Redis: the queueing step reports that; memory is not checked
        log.warning("could not read the workers' memory", exc_info=True)
    if not workers and settings.farm_memory_mb:
        # No host memory assumed for an L-BFGS history: the stand-in knows only the GPU.
        workers = [WorkerMemory(settings.farm_memory_mb * 2**20, 4, "cuda", host_budget=0)]
    return workers

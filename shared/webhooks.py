"""What a finished job tells the outside world: which webhooks it owes, and their payloads.

Whoever finishes a job announces it: a worker when a render ends, the API when it
cancels queued jobs (at once, not when a worker reaches their messages). Each finish
is announced once (a Redis SET NX per delivery id) and delivered at least once by a
separate Celery task (`worker.tasks.deliver_webhook`), so a slow or failing receiver
costs a retry message, never GPU time; receivers deduplicate on `delivery_id`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import ACTIVE, Batch, Job
from shared.settings import Settings

_CHUNK = 5000
ANNOUNCED_TTL_S = 7 * 24 * 3600


def job_payload(job: Job, settings: Settings) -> dict[str, Any]:
    base = settings.public_url.rstrip("/")
    return {
        "event": "job.finished",
        # One id per finish (a retried job finishes again: a new id); repeats are dropped.
        "delivery_id": "job-" + hashlib.sha256(
            f"{job.id}|{job.status}|{job.finished_at}".encode()).hexdigest()[:32],
        "job_id": job.id,
        "batch_id": job.batch_id,
        "status": job.status,
        "error": job.error,
        "job_url": f"{base}/v1/jobs/{job.id}",
        "result_url": f"{base}/v1/jobs/{job.id}/result" if job.result_path else None,
    }


def finished_batch_payload(
    session: Session, batch_id: str, settings: Settings
) -> dict[str, Any] | None:
    """The batch's payload when none of its jobs is active any more, else None."""
    counts = dict(
        session.execute(
            select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
        ).all()
    )
    if not counts or any(counts.get(status.value) for status in ACTIVE):
        return None
    last = session.scalar(select(func.max(Job.finished_at)).where(Job.batch_id == batch_id))
    base = settings.public_url.rstrip("/")
    return {
        "event": "batch.finished",
        # Same for every worker that sees the batch finish: the key that deduplicates.
        "delivery_id": "batch-" + hashlib.sha256(f"{batch_id}|{last}".encode()).hexdigest()[:32],
        "batch_id": batch_id,
        "status": "finished",
        "counts": counts,
        "batch_url": f"{base}/v1/batches/{batch_id}",
    }


def owed(session: Session, job_ids: list[str], settings: Settings,
         batch_ids: Iterable[str] = ()) -> list[tuple[str, dict]]:
    """(url, payload) of each webhook these jobs' finishes owe and nobody announced yet:
    the finished jobs' own, and their batches' (and `batch_ids`') where no job of the
    batch is active. A batch cancel names its batch and only the jobs with a webhook of
    their own, so it need not ship every id of a 10,000-job batch back to the database."""
    candidates: list[tuple[str, dict]] = []
    batch_ids = set(batch_ids)
    finished = Job.status.not_in([status.value for status in ACTIVE])
    for start in range(0, len(job_ids), _CHUNK):
        chunk = job_ids[start:start + _CHUNK]
        for job in session.scalars(select(Job).where(
                Job.id.in_(chunk), finished, Job.webhook_url.is_not(None))):
            candidates.append((job.webhook_url, job_payload(job, settings)))
        batch_ids.update(session.scalars(select(Job.batch_id).distinct().where(
            Job.id.in_(chunk), finished, Job.batch_id.is_not(None))))
    for batch_id in sorted(batch_ids):
        url = session.scalar(select(Batch.webhook_url).where(Batch.id == batch_id))
        payload = finished_batch_payload(session, batch_id, settings) if url else None
        if payload is not None:
            candidates.append((url, payload))
    fresh = first_to_announce([payload["delivery_id"] for _, payload in candidates], settings)
    return [pair for pair, new in zip(candidates, fresh, strict=True) if new]


def first_to_announce(delivery_ids: list[str], settings: Settings) -> list[bool]:
    """Announce each finish once: two jobs finishing a batch together both see it finished,
    a finished job's message may be delivered again (acks_late), and the API and a worker
    may both see a job canceled; only the first to claim a delivery id announces it."""
    if not delivery_ids:
        return []
    client = redis.Redis.from_url(settings.effective_redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for delivery_id in delivery_ids:
            pipe.set(f"{settings.queue_prefix}announced:{delivery_id}", 1, nx=True,
                     ex=ANNOUNCED_TTL_S)
        return [bool(claimed) for claimed in pipe.execute()]
    finally:
        client.close()


def target_problem(url: str, *, allow_private: bool, resolve: bool) -> str | None:
    """Why a webhook must not go to `url`, or None.

    A webhook is a request the farm makes on a user's behalf: it must not reach a cloud
    metadata service (link-local) and, on a farm shared by tenants, nothing inside the
    farm's own network. `resolve=False` checks the address as written; `resolve=True`
    every address the name resolves to (what the worker does, by `resolve_target`).
    """
    if resolve:
        return resolve_target(url, allow_private=allow_private)[1]
    host = urlsplit(url).hostname or ""
    if host.rstrip(".").lower() == "localhost" or host.rstrip(".").endswith(".localhost"):
        addresses = ["127.0.0.1"]  # RFC 6761: always loopback
    else:
        addresses = [host]
    return _address_problem(host, addresses, allow_private)


def resolve_target(url: str, *, allow_private: bool) -> tuple[str | None, str | None]:
    """(the address to connect to, None), or (None, why the farm must not post there).

    The name is resolved once and every address it resolves to is checked; the POST then
    goes to the first of them (worker/webhooks.py), with the URL's own name in the Host
    header and TLS SNI. A DNS answer that changes between the check and the connection
    (rebinding) cannot send the payload to an address nobody checked.
    """
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return None, f"{host} does not resolve ({exc})"
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        return None, f"{host} does not resolve"
    problem = _address_problem(host, addresses, allow_private)
    return (None, problem) if problem else (addresses[0], None)


def _address_problem(host: str, addresses: list[str], allow_private: bool) -> str | None:
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue  # a name, checked when the worker resolves it
        for each in _and_embedded(address):
            if each.is_link_local or each.is_multicast or each.is_unspecified:
                return f"{host} is a link-local, multicast or unspecified address"
            if not allow_private and not each.is_global:
                return (f"{host} is not a global address ({each}), and this farm sends "
                        f"webhooks only to the internet")
    return None


def _and_embedded(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address, and the IPv4 address an IPv6 one carries (mapped, 6to4, Teredo,
    NAT64), which is where a packet to it may end up: each must pass."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            found.append(address.ipv4_mapped)
        if address.sixtofour:
            found.append(address.sixtofour)
        if address.teredo:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


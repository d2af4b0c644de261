"""Jobs by status and priority, from the trigger-kept job_count_deltas (migration 0002).

Reading sums the table, a few rows per status and priority between fold-ups. A fold-up
deletes every row it can see with DELETE ... RETURNING and writes back one row per
(status, priority): deleted and summed are the same rows by construction, so a
transition that commits meanwhile is neither lost nor counted twice.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from shared.models import JobCountDelta

FOLD_AFTER_ROWS = 500


def counts(session: Session) -> dict[tuple[str, int], int]:
    """{(status, priority): jobs}; folds the table up first when it has grown (the caller
    commits the fold: a session in a transaction, never an autocommit one)."""
    rows = session.scalar(select(func.count()).select_from(JobCountDelta)) or 0
    if rows > FOLD_AFTER_ROWS:
        fold(session)
    out = {(status, priority): int(total) for status, priority, total in session.execute(
        select(JobCountDelta.status, JobCountDelta.priority, func.sum(JobCountDelta.delta))
        .group_by(JobCountDelta.status, JobCountDelta.priority))}
    return {key: total for key, total in out.items() if total}


def fold(session: Session) -> None:
    """Replace the rows by their sums (the caller commits: one transaction)."""
    gone = session.execute(delete(JobCountDelta).returning(
        JobCountDelta.status, JobCountDelta.priority, JobCountDelta.delta)).all()
    sums: Counter[tuple[str, int]] = Counter()
    for status, priority, delta in gone:
        sums[(status, priority)] += delta
    kept = [{"status": s, "priority": p, "delta": n} for (s, p), n in sums.items() if n]
    if kept:
        session.execute(insert(JobCountDelta), kept)

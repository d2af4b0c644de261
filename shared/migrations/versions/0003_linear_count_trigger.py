"""Job counts on PostgreSQL: the UPDATE trigger in linear time.

0002's UPDATE trigger joined the statement's old and new rows on id. Transition tables
carry no statistics, and the planner nested-looped them: cancelling a 10,000-job batch
(one UPDATE) ran for minutes and held the batch's rows meanwhile. Each row now counts -1
under its old (status, priority) and +1 under its new one, summed by group: a row that
did not move nets zero, so the deltas are the same, in one pass over each table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTION = """CREATE OR REPLACE FUNCTION stylefarm_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO job_count_deltas (status, priority, delta)
        SELECT status, priority, count(*) FROM new_rows GROUP BY status, priority;
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_count_deltas (status, priority, delta)
        SELECT status, priority, -count(*) FROM old_rows GROUP BY status, priority;
      ELSE
        INSERT INTO job_count_deltas (status, priority, delta)
        SELECT status, priority, sum(delta) FROM (
          SELECT status, priority, -1 AS delta FROM old_rows
          UNION ALL
          SELECT status, priority, 1 FROM new_rows
        ) moved GROUP BY status, priority HAVING sum(delta) <> 0;
      END IF;
      RETURN NULL;
    END $$"""


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(_FUNCTION)


def downgrade() -> None:
    """0002's function comes back with 0002's upgrade; the counts are the same either way."""
    if op.get_context().dialect.name == "postgresql":
        from importlib import import_module

        previous = import_module("shared.migrations.versions.0002_attempts_and_metrics")
        op.execute(previous._POSTGRESQL[0])

"""Per-attempt history (job_attempts); job counts per status and priority kept by triggers
(job_count_deltas, read by /metrics), counted once from the jobs at upgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("scale_seconds", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_attempts_job", "job_attempts", ["job_id", "id"], unique=False)
    op.create_table(
        "job_count_deltas",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO job_count_deltas (status, priority, delta) "
               "SELECT status, priority, count(*) FROM jobs GROUP BY status, priority")
    statements = _POSTGRESQL if op.get_context().dialect.name == "postgresql" else _SQLITE
    for statement in statements:
        op.execute(statement)


# One trigger run per statement on PostgreSQL (a COPY of 10,000 jobs appends a row per
# status and priority), one per changed row on SQLite (which has no statement triggers).
_POSTGRESQL = [
    """CREATE OR REPLACE FUNCTION stylefarm_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
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
          SELECT o.status, o.priority, -1 AS delta FROM old_rows o JOIN new_rows n
            ON n.id = o.id WHERE n.status <> o.status OR n.priority <> o.priority
          UNION ALL
          SELECT n.status, n.priority, 1 FROM old_rows o JOIN new_rows n
            ON n.id = o.id WHERE n.status <> o.status OR n.priority <> o.priority
        ) moved GROUP BY status, priority;
      END IF;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION stylefarm_count_jobs()",
    "CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows "
    "NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stylefarm_count_jobs()",
    "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION stylefarm_count_jobs()",
]
_SQLITE = [
    "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN "
    "INSERT INTO job_count_deltas (status, priority, delta) VALUES (NEW.status, NEW.priority, 1);"
    " END",
    "CREATE TRIGGER jobs_count_update AFTER UPDATE OF status, priority ON jobs "
    "WHEN OLD.status IS NOT NEW.status OR OLD.priority IS NOT NEW.priority BEGIN "
    "INSERT INTO job_count_deltas (status, priority, delta) VALUES (OLD.status, OLD.priority, -1);"
    " INSERT INTO job_count_deltas (status, priority, delta) VALUES (NEW.status, NEW.priority, 1);"
    " END",
    "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN "
    "INSERT INTO job_count_deltas (status, priority, delta) VALUES (OLD.status, OLD.priority, -1);"
    " END",
]


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{name} ON jobs")
        op.execute("DROP FUNCTION IF EXISTS stylefarm_count_jobs()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{name}")
    op.drop_table("job_count_deltas")
    op.drop_index("ix_job_attempts_job", table_name="job_attempts")
    op.drop_table("job_attempts")

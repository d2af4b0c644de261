"""The Alembic migrations build exactly the schema that shared/models.py declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shared import migrate
from shared.db import make_engine
from shared.models import Base


def test_upgrade_matches_models_and_is_repeatable(database_url: str) -> None:
    assert migrate.current(database_url) is None
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)  # a second call finds nothing to do
    assert migrate.current(database_url) == migrate.head() == "0003"
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True})
            assert compare_metadata(context, Base.metadata) == []
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("jobs")}
        assert {"ix_jobs_owner_created", "ix_jobs_batch_created"} <= indexes
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_everything(database_url: str) -> None:
    from alembic import command

    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
            conn.commit()
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()

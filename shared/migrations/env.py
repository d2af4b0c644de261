"""Alembic environment: run by `shared.migrate.upgrade`, or by the `alembic` command for authors.

`shared.migrate` hands over an open connection in `config.attributes["connection"]`, so
no alembic.ini is needed at runtime; the URL fallback serves `alembic -x url=...` when
a developer writes a new revision by hand.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from shared.db import make_engine
from shared.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url")
    if not url:
        raise RuntimeError("give a database: shared.migrate.upgrade(url) or alembic -x url=...")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run them online")
run_migrations_online()

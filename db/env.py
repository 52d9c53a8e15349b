"""Alembic environment of the crlab registry.

Run through `platform db upgrade` (which passes its connection in), or by hand with
`alembic -c db/alembic.ini upgrade head` and the database in CRLAB_DB_URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from crlab.registry.db import VERSION_TABLE, resolve_db_url
from crlab.registry.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or resolve_db_url()
    section = {"sqlalchemy.url": resolve_db_url(url)}
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=resolve_db_url(config.get_main_option("sqlalchemy.url")),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

"""Connecting to the registry database: URL resolution, engines, the one session helper, schema checks.

Where the registry lives, first match wins:
  1. ``--db URL`` on the command line;
  2. the ``CRLAB_DB_URL`` environment variable;
  3. ``registry_url`` in the experiment config;
  4. a SQLite file at ``$CRLAB_HOME/registry.db`` (``CRLAB_HOME`` defaults to ``~/.crlab``).

PostgreSQL URLs (``postgresql://user@host/db``) use the psycopg 3 driver. SQLite runs in WAL mode with a
30 s busy timeout, and every transaction starts with ``BEGIN IMMEDIATE`` so that concurrent writers queue
instead of failing. Migrations are Alembic's (``db/`` at the repository root) with their own version
table, ``crlab_alembic_version``, so Optuna's tables can share the database.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from crlab.errors import RegistryError, SchemaOutOfDate

VERSION_TABLE = "crlab_alembic_version"
SQLITE_BUSY_TIMEOUT_S = 30.0
SCHEMA_WAIT_TRIES = 10  # x 0.5 s: how long to wait for a schema another process is creating


def crlab_home() -> Path:
    return Path(os.environ.get("CRLAB_HOME") or Path.home() / ".crlab")


def resolve_db_url(cli_url: str | None = None, config_url: str | None = None) -> str:
    url = cli_url or os.environ.get("CRLAB_DB_URL") or config_url
    if not url:
        return f"sqlite:///{crlab_home() / 'registry.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    dbapi_conn.isolation_level = None  # let the "begin" hook below issue BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    _set_wal(cur)
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _set_wal(cur) -> None:  # noqa: ANN001 - DB-API cursor
    """Switch to WAL once per database. The switch takes an exclusive lock, and SQLite answers "database
    is locked" at once, without its busy handler, when another process holds one (several processes
    opening a new database together): wait for it, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created. Raises RegistryError for a bad URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise RegistryError(
            f"not a database URL: {url!r} (e.g. sqlite:///runs.db, postgresql://host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=_connect_args(parsed.get_backend_name()))
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise RegistryError(f"cannot use database URL {display_url(url)}: {exc}") from None


def _connect_args(backend: str) -> dict:
    return {"connect_timeout": 10} if backend == "postgresql" else {}


def check_reachable(engine: Engine) -> None:
    try:
        with engine.connect():
            pass
    except (OperationalError, SQLAlchemyError) as exc:
        reason = str(exc.orig if hasattr(exc, "orig") and exc.orig else exc).strip().splitlines()[0]
        raise RegistryError(
            f"cannot reach the registry database at {display_url(str(engine.url))}: {reason} "
            "(check --db or CRLAB_DB_URL, and that the server is running)"
        ) from None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """The registry's one transactional session helper: commit on success, roll back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory.begin() as session:
        yield session


def migrations_dir() -> Path:
    """The Alembic environment: ``db/`` at the repository root (or ``CRLAB_MIGRATIONS_DIR``)."""
    override = os.environ.get("CRLAB_MIGRATIONS_DIR")
    path = Path(override) if override else Path(__file__).resolve().parents[3] / "db"
    if not (path / "env.py").is_file():
        raise RegistryError(
            f"Alembic migrations not found at {path}; install crlab from its repository "
            "(pip install -e .) or set CRLAB_MIGRATIONS_DIR"
        )
    return path


def alembic_config(url: str):  # noqa: ANN201 - alembic.config.Config
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", VERSION_TABLE)
    return cfg


_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:None|[\"']([^\"']+)[\"'])\s*$", re.M)


def head_revision(url: str) -> str:  # noqa: ARG001 - the migrations are the same for every database
    """The newest migration: the revision of ``db/versions`` that no other one revises.

    Read from each file's ``revision = "..."`` and ``down_revision = "..."`` lines rather than through
    Alembic, whose import costs a registry command (every one checks the schema) a noticeable share of its
    time; tests/registry/test_migrations.py checks that Alembic's upgrade to head lands on this revision."""
    revises: dict[str, str | None] = {}
    for path in sorted((migrations_dir() / "versions").glob("*.py")):
        found = dict((m.group(1), m.group(2)) for m in _REVISION.finditer(path.read_text(encoding="utf-8")))
        if "revision" in found:
            revises[found["revision"]] = found.get("down_revision")
    heads = set(revises) - set(revises.values())
    if len(heads) != 1:
        raise RegistryError(
            f"the migrations in {migrations_dir()} have {len(heads)} heads ({sorted(heads)}), not one"
        )
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The revision in the database's version table (None: not created yet), read with one query."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(found) > 1:
        raise RegistryError(f"the registry's {VERSION_TABLE} holds {len(found)} revisions: {sorted(found)}")
    return found[0] if found else None


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database at ``url``; returns (revision before, revision after)."""
    from alembic import command

    engine = make_engine(url)
    check_reachable(engine)
    before = current_revision(engine)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    after = current_revision(engine)
    engine.dispose()
    return before, after or ""


def ensure_schema(engine: Engine, url: str, create_if_empty: bool = True) -> None:
    """Refuse a database whose schema is not this code's head; create the schema in an empty one.

    Several processes may open a new database at once (a sweep's cells, two sweep commands): one creates
    the schema, the others wait for it instead of taking a half-created schema for a foreign one.
    """
    head = head_revision(url)
    current = None
    for _ in range(SCHEMA_WAIT_TRIES):
        current = current_revision(engine)
        if current == head:
            return
        if current is not None:
            break
        if not set(inspect(engine).get_table_names()) & {"runs", "sweeps"}:
            if not create_if_empty:
                raise SchemaOutOfDate(
                    f"the registry at {display_url(url)} is empty: run `platform db upgrade`"
                )
            try:
                upgrade(url)
                return
            except SQLAlchemyError:
                pass  # another process created it first; look again
        time.sleep(0.5)
    fix = f"platform db upgrade --db '{display_url(url)}'"
    raise SchemaOutOfDate(
        f"the registry at {display_url(url)} has schema revision {current or 'none'}, this platform needs "
        f"{head}: run `{fix}` (back up the database first)"
    )

"""Migrations produce exactly the ORM's schema; old and foreign schemas are refused with the fix."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from crlab.errors import RegistryError, SchemaOutOfDate
from crlab.registry import Registry
from crlab.registry import db as regdb
from crlab.registry.models import Base


def test_upgrade_head_on_empty_database_yields_the_orm_schema(db_url: str) -> None:
    before, after = regdb.upgrade(db_url)
    assert before is None and after == regdb.head_revision(db_url)
    engine = regdb.make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": regdb.VERSION_TABLE}
        )
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"migrations and ORM disagree: {diff}"
    tables = set(inspect(engine).get_table_names())
    assert {"sweeps", "runs", "metrics", "events", "checkpoints", regdb.VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # Optuna's tables can share the database
    engine.dispose()
    assert regdb.upgrade(db_url) == (after, after)  # idempotent


def test_empty_database_gets_the_schema_on_first_open(db_url: str) -> None:
    with Registry(db_url) as reg:
        assert reg.list_runs() == []
    engine = regdb.make_engine(db_url)
    assert regdb.current_revision(engine) == regdb.head_revision(db_url)
    engine.dispose()


def test_database_at_an_older_schema_is_refused_with_the_fix(db_url: str) -> None:
    regdb.upgrade(db_url)
    engine = create_engine(regdb.resolve_db_url(db_url))
    with engine.begin() as conn:  # pretend an older platform created it
        conn.execute(text(f"UPDATE {regdb.VERSION_TABLE} SET version_num = '0000old'"))
        n_runs = conn.execute(text("SELECT count(*) FROM runs")).scalar()
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match=r"0000old.*platform db upgrade"):
        Registry(db_url)
    engine = create_engine(regdb.resolve_db_url(db_url))
    with engine.connect() as conn:  # the refusal changed nothing
        assert conn.execute(text(f"SELECT version_num FROM {regdb.VERSION_TABLE}")).scalar() == "0000old"
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == n_runs
    engine.dispose()


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(RegistryError, match="cannot reach the registry database"):
        Registry("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("this is not a url")


def _open(url: str, out) -> None:  # noqa: ANN001
    try:
        Registry(url).close()
        out.put("ok")
    except Exception as exc:  # reported to the parent
        out.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_together_all_get_the_schema(db_url: str) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(db_url, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == ["ok"] * 4

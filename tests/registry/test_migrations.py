"""Migrations produce exactly the ORM's schema; old and foreign schemas are refused with the fix."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from tests.registry.recording import Recording

from crlab.errors import RegistryError, SchemaOutOfDate
from crlab.registry import Registry
from crlab.registry import db as regdb
from crlab.registry.models import Base
from crlab.registry.query import find_runs


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


def test_the_revisions_read_without_alembic_are_alembics(db_url: str) -> None:
    """`head_revision` reads the migration files and `current_revision` the version table directly (no
    Alembic import on a registry command): both agree with Alembic's own answers, before and after."""
    from alembic.script import ScriptDirectory

    engine = regdb.make_engine(db_url)

    def alembic_current() -> str | None:
        with engine.connect() as conn:
            return MigrationContext.configure(
                conn, opts={"version_table": regdb.VERSION_TABLE}
            ).get_current_revision()

    assert regdb.current_revision(engine) is None and alembic_current() is None
    regdb.upgrade(db_url, "0001")
    assert regdb.current_revision(engine) == alembic_current() == "0001"
    regdb.upgrade(db_url)
    head = ScriptDirectory.from_config(regdb.alembic_config(db_url)).get_current_head()
    assert regdb.head_revision(db_url) == head == regdb.current_revision(engine) == alembic_current()
    engine.dispose()


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


def _at_0001_with_data(url: str) -> None:
    """A registry at revision 0001 with two runs; run a was resumed once before summaries existed, so its
    steps 4 and 5 were logged twice (the second copy, with the higher id, is the one to keep)."""
    import sqlalchemy as sa

    from crlab.registry.store import utcnow

    assert regdb.upgrade(url, "0001") == (None, "0001")
    runs = sa.table(
        "runs", *(sa.column(c) for c in ("id", "name", "status", "attempt", "created_at")),
        sa.column("config", sa.JSON), sa.column("packages", sa.JSON),
    )  # fmt: skip
    metrics = sa.table("metrics", *(sa.column(c) for c in ("run_id", "step", "key", "value", "time")))
    now = utcnow()
    rows = [("a", s, "reward/rl_mean", v) for s, v in [(1, 0.1), (2, 0.9), (3, 0.3), (4, 0.4), (5, 0.5)]]
    rows += [("a", s, "reward/rl_mean", v) for s, v in [(4, 0.2), (5, 0.6)]]  # replayed after a resume
    rows += [("a", s, "loss", 2.0 - s / 10) for s in (1, 2, 3)] + [("b", 7, "reward/rl_mean", 0.7)]
    engine = create_engine(regdb.resolve_db_url(url))
    with engine.begin() as conn:
        for run_id in ("a", "b"):
            conn.execute(sa.insert(runs).values(
                id=run_id, name=run_id, status="completed", attempt=1, created_at=now, packages={},
                config={"data": {"crl_ratio": 0.2 if run_id == "a" else 0.5}, "tracking": {"tags": [run_id]}},
            ))  # fmt: skip
        conn.execute(
            sa.insert(metrics),
            [dict(zip(("run_id", "step", "key", "value"), r, strict=True), time=now) for r in rows],
        )
    engine.dispose()


def test_0002_dedupes_metrics_and_fills_summaries_from_existing_rows(db_url: str) -> None:
    _at_0001_with_data(db_url)
    assert regdb.upgrade(db_url) == ("0001", regdb.head_revision(db_url))
    with Registry(db_url, create_if_empty=False) as reg:
        steps = [(m.step, m.value) for m in reg.metrics("a", keys=["reward/rl_mean"])]
        assert steps == [(1, 0.1), (2, 0.9), (3, 0.3), (4, 0.2), (5, 0.6)]  # the newer copies kept
        summary = {s.key: s for s in reg.summaries("a")}
        reward, loss = summary["reward/rl_mean"], summary["loss"]
        assert (reward.last, reward.last_step, reward.n) == (0.6, 5, 5)
        assert (reward.min, reward.min_step, reward.max, reward.max_step) == (0.1, 1, 0.9, 2)
        assert (loss.last, loss.min, loss.min_step, loss.max, loss.max_step) == (1.7, 1.7, 3, 1.9, 1)
        assert (loss.best, loss.best_step, reward.best, reward.best_step) == (1.7, 3, 0.9, 2)
        assert reg.latest_metrics("b") == {"reward/rl_mean": (7, 0.7)}
        assert reg.get_run("a").config == {"data": {"crl_ratio": 0.2}, "tracking": {"tags": ["a"]}}
        query = "config.data.crl_ratio < 0.3 and metrics.reward/rl_mean.max = 0.9 and tags = 'a'"
        assert [r.id for r in find_runs(reg, query)] == ["a"]  # configs (JSONB on PostgreSQL now), summaries
        with Recording(reg, "a") as rec:
            rec.metrics(6, {"reward/rl_mean": 1.0})  # the summary goes on from the migrated one
        reward = {s.key: s for s in reg.summaries("a")}["reward/rl_mean"]
        assert (reward.last, reward.max, reward.max_step, reward.n) == (1.0, 1.0, 6, 6)
    if db_url.startswith("postgres"):
        assert _config_column(db_url) == ("jsonb", "l")  # compressed with lz4
    _downgrade(db_url, "0001")
    engine = regdb.make_engine(db_url)
    assert "metric_summaries" not in inspect(engine).get_table_names()
    engine.dispose()
    if db_url.startswith("postgres"):
        assert _config_column(db_url)[0] == "json"


def _config_column(url: str) -> tuple[str, str]:
    engine = create_engine(regdb.resolve_db_url(url))
    column = "FROM pg_attribute WHERE attrelid = 'runs'::regclass AND attname = 'config'"
    with engine.connect() as conn:
        found = conn.execute(text(f"SELECT atttypid::regtype::text, attcompression {column}")).one()
    engine.dispose()
    return tuple(found)  # type: ignore[return-value]


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    engine = regdb.make_engine(url)
    cfg = regdb.alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    assert regdb.current_revision(engine) == revision
    engine.dispose()


def test_0003_adds_the_best_flag_to_existing_checkpoints(db_url: str) -> None:
    """From 0002 with a run and its checkpoints in it: the rows stay, none is best; one can be flagged, a
    second best is refused; downgrading drops the flag and keeps the rows."""
    import sqlalchemy as sa

    from crlab.registry.store import utcnow

    assert regdb.upgrade(db_url, "0002")[1] == "0002"
    runs = sa.table(
        "runs", *(sa.column(c) for c in ("id", "name", "status", "attempt", "created_at")),
        sa.column("config", sa.JSON), sa.column("packages", sa.JSON),
    )  # fmt: skip
    checkpoints = sa.table(
        "checkpoints", *(sa.column(c) for c in ("run_id", "step", "path", "complete", "created_at"))
    )
    engine = create_engine(regdb.resolve_db_url(db_url))
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(sa.insert(runs).values(id="a", name="a", status="completed", attempt=1, created_at=now,
                                            packages={}, config={"eval": {"select": "eval/pass@1"}}))  # fmt: skip
        conn.execute(sa.insert(checkpoints), [
            {"run_id": "a", "step": s, "path": f"/ck/{s}", "complete": True, "created_at": now} for s in (5, 10)
        ])  # fmt: skip
    engine.dispose()
    assert regdb.upgrade(db_url) == ("0002", regdb.head_revision(db_url))
    with Registry(db_url, create_if_empty=False) as reg:
        assert [(c.step, c.path, c.complete, c.best) for c in reg.checkpoints("a")] == [
            (5, "/ck/5", True, False), (10, "/ck/10", True, False)
        ]  # fmt: skip
        assert reg.best_checkpoint("a") is None
        with Recording(reg, "a") as rec:
            rec.best(5)
            assert reg.best_checkpoint("a").step == 5
            kept = ["/ck/5", "/ck/10", "/ck/15"]
            rec.checkpoint(15, "/ck/15", kept=kept, best=None)  # written after the upgrade: not best
        assert [c.best for c in reg.checkpoints("a")] == [True, False, False]
    engine = create_engine(regdb.resolve_db_url(db_url))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE checkpoints SET best = true WHERE step = 10"))
    engine.dispose()
    _downgrade(db_url, "0002")
    engine = regdb.make_engine(db_url)
    columns = {c["name"] for c in inspect(engine).get_columns("checkpoints")}
    engine.dispose()
    assert "best" not in columns
    engine = create_engine(regdb.resolve_db_url(db_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT step FROM checkpoints ORDER BY step")).scalars().all() == [5, 10, 15]
    engine.dispose()


def test_0004_adds_provenance_and_reproduces_to_existing_runs(db_url: str) -> None:
    """From 0003 with a run, its metrics and checkpoint in it: the rows stay, provenance and reproduces are
    empty, a new run records both; downgrading drops the columns and keeps every row (no cascade)."""
    import sqlalchemy as sa

    from crlab.registry.store import utcnow

    assert regdb.upgrade(db_url, "0003")[1] == "0003"
    runs = sa.table(
        "runs", *(sa.column(c) for c in ("id", "name", "status", "attempt", "created_at", "git_commit")),
        sa.column("config", sa.JSON), sa.column("packages", sa.JSON),
    )  # fmt: skip
    engine = create_engine(regdb.resolve_db_url(db_url))
    with engine.begin() as conn:
        conn.execute(sa.insert(runs).values(id="a", name="a", status="completed", attempt=1, created_at=utcnow(),
                                            git_commit="c0ffee", packages={"torch": "2"}, config={"seed": 0}))  # fmt: skip
    engine.dispose()
    with pytest.raises(SchemaOutOfDate, match="platform db upgrade"):
        Registry(db_url, create_if_empty=False)
    assert regdb.upgrade(db_url) == ("0003", regdb.head_revision(db_url))
    with Registry(db_url, create_if_empty=False) as reg:
        with Recording(reg, "a") as rec:
            rec.metrics(1, {"reward/rl_mean": 0.5})
            rec.checkpoint(1, "/ck/1", kept=["/ck/1"], best=None)
        old = reg.get_run("a")
        assert (old.provenance, old.reproduces, old.git_commit, old.packages) == (
            {},
            None,
            "c0ffee",
            {"torch": "2"},
        )
        made = {"git": {"commit": "c0ffee", "dirty": False, "diff_sha256": None}, "data": {}, "seed": 0}
        reg.create_run("b", {"seed": 0}, run_id="b", provenance=made, reproduces="a")
        new = reg.get_run("b")
        assert (new.provenance, new.reproduces) == (made, "a")
        assert [r.id for r in find_runs(reg, "reproduces = 'a'")] == ["b"]
    _downgrade(db_url, "0003")
    engine = regdb.make_engine(db_url)
    columns = {c["name"] for c in inspect(engine).get_columns("runs")}
    engine.dispose()
    assert not {"provenance", "reproduces"} & columns
    engine = create_engine(regdb.resolve_db_url(db_url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM runs ORDER BY id")).scalars().all() == ["a", "b"]
        assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM checkpoints")).scalar() == 1
    engine.dispose()

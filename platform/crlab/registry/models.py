"""ORM rows of the experiment registry. They never leave the registry package (see entities.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from crlab.registry.entities import RunStatus

RUN_STATUSES = tuple(s.value for s in RunStatus)


class Base(DeclarativeBase):
    pass


class SweepRow(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True, unique=True)
    spec: Mapped[dict] = mapped_column(JSON)
    spec_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("sweep_id", "cell_key", name="uq_runs_sweep_cell"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    cell_key: Mapped[str | None] = mapped_column(String(64))
    # JSONB on PostgreSQL: queries read config keys (crlab.registry.query), and JSONB needs no parsing per
    # read. It keeps no key order; the config schema restores it when a config is loaded.
    config: Mapped[dict] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    packages: Mapped[dict] = mapped_column(JSON)
    provenance: Mapped[dict | None] = mapped_column(JSON)  # crlab.provenance.run_provenance; None before 0004
    reproduces: Mapped[str | None] = mapped_column(String(64))  # the run this one reproduces
    wandb_run_id: Mapped[str | None] = mapped_column(String(64))
    run_dir: Mapped[str | None] = mapped_column(Text)
    # the last record of the run's journal applied here (crlab.registry.journal); 0 before any
    journal_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)  # lists sort by it
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MetricRow(Base):
    """One value of one metric at one step; at most one row per (run, key, step) (see
    ``summaries.write_metrics``)."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_step", "run_id", "key", "step", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricSummaryRow(Base):
    """A run's metric at a glance, kept by ``summaries.write_metrics`` in the same transaction as the rows:
    its last value, its lowest and highest (each with its step; ties keep the earliest step) and how many
    steps logged it. Queries read this table, never the metric rows."""

    __tablename__ = "metric_summaries"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)
    last: Mapped[float] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer)
    min: Mapped[float] = mapped_column(Float)
    min_step: Mapped[int] = mapped_column(Integer)
    max: Mapped[float] = mapped_column(Float)
    max_step: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict] = mapped_column(JSON)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CheckpointRow(Base):
    """A checkpoint of a run; ``best`` marks the one whose held-out metric (the run's ``eval.select``) is
    best so far. At most one per run: a partial unique index on the run's best row (SQLite and PostgreSQL
    both have them)."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        UniqueConstraint("run_id", "step", name="uq_checkpoints_run_step"),
        Index("uq_checkpoints_run_best", "run_id", unique=True, sqlite_where=text("best"), postgresql_where=text("best")),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    best: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

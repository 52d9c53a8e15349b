"""The experiment registry: sweeps, runs, metrics, events and checkpoints behind one small API.

Every method opens one transaction through :func:`session_scope` and returns plain records from
``entities.py``; ORM rows never leave this package.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from crlab.errors import RegistryError
from crlab.registry import db
from crlab.registry.entities import Checkpoint, Event, Metric, MetricSummary, Run, RunStatus, Sweep
from crlab.registry.journal import add_event, end_attempt, replay_pending
from crlab.registry.models import (
    RUN_STATUSES,
    CheckpointRow,
    EventRow,
    MetricRow,
    MetricSummaryRow,
    RunRow,
    SweepRow,
)
from crlab.registry.retry import Reachability

_RUN_FIELDS = {c.name for c in RunRow.__table__.columns} - {"id", "created_at"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything the registry stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _run(row: RunRow) -> Run:
    return Run(
        id=row.id,
        name=row.name,
        sweep_id=row.sweep_id,
        cell_key=row.cell_key,
        status=RunStatus(row.status),
        attempt=row.attempt,
        config=row.config,
        heartbeat_at=_aware(row.heartbeat_at),
        host=row.host,
        pid=row.pid,
        job_id=row.job_id,
        git_commit=row.git_commit,
        git_dirty=row.git_dirty,
        packages=row.packages or {},
        reproduces=row.reproduces,
        provenance=row.provenance or {},
        wandb_run_id=row.wandb_run_id,
        run_dir=row.run_dir,
        journal_seq=row.journal_seq or 0,
        error=row.error,
        created_at=_aware(row.created_at),
        started_at=_aware(row.started_at),
        ended_at=_aware(row.ended_at),
    )


def _sweep(row: SweepRow) -> Sweep:
    return Sweep(row.id, row.name, row.spec, row.spec_path, _aware(row.created_at))  # type: ignore[arg-type]


def new_id() -> str:
    """A short random id (8 hex digits), also valid as a W&B run id."""
    return uuid.uuid4().hex[:8]


class Registry:
    """Open the registry at ``url`` (see :func:`crlab.registry.db.resolve_db_url`).

    The database must be reachable and at this code's schema revision; an empty database gets the schema
    created (``create_if_empty``). Anything else raises :class:`~crlab.errors.RegistryError`. Opening it
    sends what the journals of runs still ``running`` here hold and it lacks (``replay_journals``; see
    :mod:`crlab.registry.journal`): a run that ended during an outage is settled by the next command.
    """

    def __init__(self, url: str | None = None, create_if_empty: bool = True, replay_journals: bool = True) -> None:
        self.url = db.resolve_db_url(url)
        self.reach = Reachability()  # set its retry_s to ride out outages (a sweep does)
        self.engine: Engine = db.make_engine(self.url)
        db.check_reachable(self.engine)
        db.ensure_schema(self.engine, self.url, create_if_empty=create_if_empty)
        if replay_journals:
            replay_pending(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sweeps -----------------------------------------------------------------------------------
    def create_sweep(self, name: str, spec: dict[str, Any], spec_path: str | None = None) -> Sweep:
        row = SweepRow(id=new_id(), name=name, spec=spec, spec_path=spec_path, created_at=utcnow())
        with db.session_scope(self.engine) as s:
            s.add(row)
            s.flush()
            return _sweep(row)

    def get_or_create_sweep(self, name: str, spec: dict[str, Any], spec_path: str | None = None) -> Sweep:
        """The sweep called ``name``, created if there is none (sweep names are unique; safe to race)."""
        from sqlalchemy.exc import IntegrityError

        try:
            return self.create_sweep(name, spec, spec_path)
        except IntegrityError:
            return self.get_sweep(name)

    def get_sweep(self, ref: str) -> Sweep:
        """A sweep by id or by name (the newest of that name)."""
        with db.session_scope(self.engine) as s:
            row = (
                s.get(SweepRow, ref)
                or s.scalars(
                    select(SweepRow).where(SweepRow.name == ref).order_by(SweepRow.created_at.desc())
                ).first()
            )
            if row is None:
                raise RegistryError(f"no sweep with id or name {ref!r} (see `platform runs list`)")
            return _sweep(row)

    def list_sweeps(self) -> list[Sweep]:
        with db.session_scope(self.engine) as s:
            return [_sweep(r) for r in s.scalars(select(SweepRow).order_by(SweepRow.created_at))]

    # -- runs -------------------------------------------------------------------------------------
    def create_run(
        self, name: str, config: dict[str, Any], *, sweep_id: str | None = None,
        cell_key: str | None = None, run_id: str | None = None, **fields: Any,
    ) -> Run:  # fmt: skip
        _check_fields(fields)
        row = RunRow(
            id=run_id or new_id(), name=name, config=config, sweep_id=sweep_id, cell_key=cell_key,
            status=_status_value(fields.pop("status", RunStatus.PENDING)), attempt=fields.pop("attempt", 0),
            packages=fields.pop("packages", {}), created_at=utcnow(), **fields,
        )  # fmt: skip
        with db.session_scope(self.engine) as s:
            s.add(row)
            s.flush()
            return _run(row)

    def get_run(self, ref: str) -> Run:
        """A run by id, or by a unique prefix of its id."""
        with db.session_scope(self.engine) as s:
            row = s.get(RunRow, ref)
            if row is None:
                rows = s.scalars(select(RunRow).where(RunRow.id.startswith(ref, autoescape=True))).all()
                if len(rows) > 1:
                    raise RegistryError(
                        f"run id prefix {ref!r} is ambiguous: {', '.join(r.id for r in rows)}"
                    )
                row = rows[0] if rows else None
            if row is None:
                raise RegistryError(f"no run with id {ref!r} (see `platform runs list`)")
            return _run(row)

    def list_runs(
        self, sweep_id: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Run]:
        query = select(RunRow).order_by(RunRow.created_at, RunRow.id)
        if sweep_id is not None:
            query = query.where(RunRow.sweep_id == sweep_id)
        if status is not None:
            query = query.where(RunRow.status == _status_value(status))
        if limit is not None:
            query = query.limit(limit)
        with db.session_scope(self.engine) as s:
            return [_run(r) for r in s.scalars(query)]

    def update_run(self, run_id: str, **fields: Any) -> Run:
        _check_fields(fields)
        with db.session_scope(self.engine) as s:
            row = _get_run_row(s, run_id)
            for key, value in fields.items():
                setattr(row, key, _status_value(value) if key == "status" else value)
            s.flush()
            return _run(row)

    def start_attempt(self, run_id: str, **fields: Any) -> Run:
        """Take the run for a new attempt (attempt + 1, running), with host, pid or job id in ``fields``."""
        _check_fields(fields)
        with db.session_scope(self.engine) as s:
            row = _get_run_row(s, run_id)
            begin_attempt(row, fields)
            s.flush()
            return _run(row)

    def heartbeat(self, run_id: str) -> None:
        self.update_run(run_id, heartbeat_at=utcnow())

    def finish_run(self, run_id: str, status: RunStatus | str, error: str | None = None) -> Run:
        """End the run's attempt outside its journal (it failed before it had one, or its process is gone)."""
        with db.session_scope(self.engine) as s:
            row = _get_run_row(s, run_id)
            end_attempt(row, _status_value(status), error, utcnow())
            s.flush()
            return _run(row)

    # -- metrics, events, checkpoints ------------------------------------------------------------
    # A run writes its metrics, checkpoints and best flag through its journal (crlab.registry.writer),
    # never here: the journal's application (crlab.registry.journal.apply_records) is their one write path.
    def metrics(self, run_id: str, keys: Iterable[str] | None = None) -> list[Metric]:
        query = select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.step, MetricRow.id)
        if keys is not None:
            query = query.where(MetricRow.key.in_(list(keys)))
        with db.session_scope(self.engine) as s:
            return [Metric(r.run_id, r.step, r.key, r.value, _aware(r.time)) for r in s.scalars(query)]  # type: ignore[arg-type]

    def metric_count(self, run_id: str) -> int:
        with db.session_scope(self.engine) as s:
            return (
                s.scalar(select(func.count()).select_from(MetricRow).where(MetricRow.run_id == run_id)) or 0
            )

    def latest_metrics(self, run_id: str) -> dict[str, tuple[int, float]]:
        """Each metric key's value at its last logged step (from the run's summary)."""
        return self.latest_metrics_of([run_id]).get(run_id, {})

    def latest_metrics_of(self, run_ids: Iterable[str]) -> dict[str, dict[str, tuple[int, float]]]:
        """:meth:`latest_metrics` of many runs at once: run id -> key -> (step, value)."""
        out: dict[str, dict[str, tuple[int, float]]] = {}
        for part in _chunks(list(run_ids)):
            query = select(
                MetricSummaryRow.run_id,
                MetricSummaryRow.key,
                MetricSummaryRow.last_step,
                MetricSummaryRow.last,
            ).where(MetricSummaryRow.run_id.in_(part))
            with db.session_scope(self.engine) as s:
                for run_id, key, step, value in s.execute(query):
                    out.setdefault(run_id, {})[key] = (step, value)
        return out

    def summaries(self, run_id: str) -> list[MetricSummary]:
        """The run's metric summaries (last, min, max with their steps, n), by key."""
        query = (
            select(MetricSummaryRow).where(MetricSummaryRow.run_id == run_id).order_by(MetricSummaryRow.key)
        )
        with db.session_scope(self.engine) as s:
            return [_summary(r) for r in s.scalars(query)]

    def metric_value(self, run_id: str, key: str, which: str = "last") -> float | None:
        """The run's ``best`` or ``last`` value of ``key`` (from its summary), or None if it never logged it."""
        query = select(MetricSummaryRow).where(MetricSummaryRow.run_id == run_id, MetricSummaryRow.key == key)
        with db.session_scope(self.engine) as s:
            found = [_summary(r) for r in s.scalars(query)]
        return found[0].pick(which) if found else None

    def log_event(
        self, run_id: str, kind: str, payload: dict[str, Any] | None = None, step: int | None = None
    ) -> Event:
        with db.session_scope(self.engine) as s:
            row = add_event(s, run_id, kind, payload, step, utcnow())
            s.flush()
            return Event(row.run_id, row.step, row.kind, row.payload, _aware(row.time))  # type: ignore[arg-type]

    def events(self, run_id: str, kind: str | None = None) -> list[Event]:
        query = select(EventRow).where(EventRow.run_id == run_id).order_by(EventRow.id)
        if kind is not None:
            query = query.where(EventRow.kind == kind)
        with db.session_scope(self.engine) as s:
            return [Event(r.run_id, r.step, r.kind, r.payload, _aware(r.time)) for r in s.scalars(query)]  # type: ignore[arg-type]

    def checkpoints(self, run_id: str, complete_only: bool = False) -> list[Checkpoint]:
        query = select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.step)
        if complete_only:
            query = query.where(CheckpointRow.complete.is_(True))
        with db.session_scope(self.engine) as s:
            return [_checkpoint(r) for r in s.scalars(query)]

    def best_checkpoint(self, run_id: str) -> Checkpoint | None:
        """The run's best checkpoint (flagged by its journal's ``checkpoint`` or ``best`` record), or None."""
        query = select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.best.is_(True))
        with db.session_scope(self.engine) as s:
            row = s.scalars(query).first()
            return _checkpoint(row) if row is not None else None


def _through_reach(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Registry, *args: Any, **kwargs: Any) -> Any:
        return self.reach.call(method, self, *args, **kwargs)

    return call


for _name, _method in list(vars(Registry).items()):  # every call retries while the registry is away
    if inspect.isfunction(_method) and not _name.startswith("_") and _name != "close":
        setattr(Registry, _name, _through_reach(_method))


def _summary(r: MetricSummaryRow) -> MetricSummary:
    return MetricSummary(r.run_id, r.key, r.last, r.last_step, r.min, r.min_step, r.max, r.max_step, r.n)


def _checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(row.run_id, row.step, row.path, row.complete, _aware(row.created_at), bool(row.best))  # type: ignore[arg-type]


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _get_run_row(session: Any, run_id: str) -> RunRow:
    row = session.get(RunRow, run_id)
    if row is None:
        raise RegistryError(f"no run with id {run_id!r} (see `platform runs list`)")
    return row


def begin_attempt(row: RunRow, fields: Mapping[str, Any]) -> None:
    """A new attempt on ``row``: counted now, before anything can fail (see lifecycle.py)."""
    now = utcnow()
    row.attempt += 1
    row.status, row.heartbeat_at, row.error, row.ended_at = RunStatus.RUNNING.value, now, None, None
    row.started_at = row.started_at or now
    for key, value in fields.items():
        setattr(row, key, value)


def _status_value(status: RunStatus | str) -> str:
    try:
        return RunStatus(status).value
    except ValueError:
        raise RegistryError(f"unknown run status {status!r}; valid: {', '.join(RUN_STATUSES)}") from None


def _check_fields(fields: Mapping[str, Any]) -> None:
    unknown = set(fields) - _RUN_FIELDS
    if unknown:
        raise RegistryError(f"unknown run field(s) {sorted(unknown)}; valid: {sorted(_RUN_FIELDS)}")
    if "status" in fields:
        _status_value(fields["status"])

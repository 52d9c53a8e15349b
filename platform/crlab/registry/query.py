"""Finding runs: ``--where``, ``--sort``, ``--columns`` and ``--limit`` of ``platform runs list``.

:func:`find_runs` turns them into one SQLAlchemy Core query that the database answers (nothing is
filtered in Python): the runs table, the sweep's name, and one outer join on ``metric_summaries`` per
metric key used, so metric conditions read the run summary, never the metric rows. Config values are
read from the JSON column with type-guarded reads (:mod:`crlab.registry.query_json`), so the same query
gives the same runs on SQLite and PostgreSQL.

What a comparison means:

- numbers compare as numbers, text as text (by code point, on both databases), times as times
  (``created > '2026-05-01'``, UTC unless the value says otherwise), ``true``/``false`` with = and !=;
- ``like`` is SQL's: ``%`` any text, ``_`` one character, ``\\`` escapes; case-sensitive;
- ``tags = 'x'`` (and any list-valued config key) means the list contains x; ``in`` that it contains one of
  the values, ``like`` that one element matches;
- a run without a value for a key (a metric it never logged, a config key that is null) matches no
  comparison on it except ``= null``; every negation (``not``, ``!=``, ``not in``, ``not like``) is the
  exact complement of its positive form, so ``metrics.x.last != 1`` includes runs that never logged x.

Unknown keys, unknown metric keys (checked against the metrics present in the registry), malformed
expressions and type mismatches raise :class:`~crlab.registry.query_lang.QueryError`.
"""

from __future__ import annotations

import difflib
import json
import operator
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, and_, false, func, not_, or_, select
from sqlalchemy.sql.elements import ColumnElement

from crlab.registry import db
from crlab.registry.entities import ListedRun, RunStatus, lower_is_better
from crlab.registry.models import MetricSummaryRow, RunRow, SweepRow
from crlab.registry.query_json import for_dialect
from crlab.registry.query_keys import ANY, BOOL, NUM, STR, Field, FieldKind, ValueType, check, resolve
from crlab.registry.query_lang import And, Compare, Node, Not, Or, QueryError, parse
from crlab.registry.store import Registry, _aware, _status_value

SUMMARY = MetricSummaryRow.__table__
LISTED = [c for c in RunRow.__table__.columns if c.name not in ("config", "provenance")]  # a listed run's
LISTED_NAMES = [c.name for c in LISTED]
STATUSES = {s.value: s for s in RunStatus}
NOT_NULL = {c.name for c in RunRow.__table__.columns if not c.nullable}
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def find_runs(
    registry: Registry, where: str | None = None, *, sort: str | None = None, limit: int | None = None,
    columns: Sequence[str] = (), sweep_id: str | None = None, status: str | None = None,
) -> list[ListedRun]:  # fmt: skip
    """The runs matching ``where``, ordered by ``sort`` (``KEY[:desc]``, comma-separated; oldest first
    when none), at most ``limit`` (without ``sort``: the newest ones), each with the values of ``columns``. Whole configs are not read (a
    config is the bulk of a run's row): config keys come as columns."""
    sql = Compiler(registry.engine.dialect.name)
    conditions = [sql.where(where)] if where is not None else []
    if sweep_id is not None:
        conditions.append(RunRow.sweep_id == sweep_id)
    if status is not None:
        conditions.append(RunRow.status == _status_value(status))
    order = sql.order(sort) if sort else []
    fields = sql.columns(columns)
    shown = [sql.shown(f).label(f"c{i}") for i, f in enumerate(fields)]
    query = select(*LISTED, SweepRow.name.label("sweep"), *shown).outerjoin(
        SweepRow, SweepRow.id == RunRow.sweep_id
    )
    for key, summary in sql.summaries.items():
        query = query.outerjoin(summary, and_(summary.c.run_id == RunRow.id, summary.c.key == key))
    newest = limit is not None and not sort  # --limit alone: the newest runs, still listed oldest first
    age = (RunRow.created_at.desc(), RunRow.id.desc()) if newest else (RunRow.created_at, RunRow.id)
    query = query.where(*conditions).order_by(*order, *age).limit(limit)
    with db.session_scope(registry.engine) as s:
        sql.check_metrics(s)
        rows = s.execute(query).all()
    return [_listed(row, fields) for row in (rows[::-1] if newest else rows)]


def _listed(row: Any, fields: list[Field]) -> ListedRun:
    run = dict(zip(LISTED_NAMES, row, strict=False))
    for key in ("heartbeat_at", "created_at", "started_at", "ended_at"):
        run[key] = _aware(run[key])
    run["status"], run["packages"] = STATUSES[run["status"]], run["packages"] or {}
    values, shown = {}, row[len(LISTED) + 1 :]
    for f, value in zip(fields, shown, strict=True):
        if f.kind == FieldKind.CONFIG:
            value = None if value is None else json.loads(value)
        elif f.kind == FieldKind.COLUMN and f.column != "sweep":
            value = run[f.column]
        values[f.name] = value
    return ListedRun(**run, sweep=row[len(LISTED)], values=values)


def split_columns(text: str) -> list[str]:
    """``--columns id,status,config.data.crl_ratio`` as a list of names."""
    return [c.strip() for c in text.split(",") if c.strip()]


class Compiler:
    """One query's translation into SQL; remembers the metric keys it joins (``summaries``)."""

    def __init__(self, dialect: str) -> None:
        self.json = for_dialect(dialect)
        self.summaries: dict[str, Any] = {}  # metric key -> an alias of metric_summaries
        self.used: dict[str, tuple[str, str, int]] = {}  # metric key -> where it was first named
        self.text, self.option = "", "--where"

    # -- keys ----------------------------------------------------------------------------------------
    def field(self, key: str, pos: int) -> Field:
        found = resolve(key, pos, self.text, self.option)
        if found.kind == FieldKind.METRIC:
            self.used.setdefault(found.metric, (self.option, self.text, pos))
            if found.metric not in self.summaries:
                self.summaries[found.metric] = SUMMARY.alias(f"ms{len(self.summaries)}")
        return found

    def scalar(self, field: Field, want: str) -> ColumnElement[Any]:
        """The field's value in SQL, read as ``want`` (number, text or boolean for config keys)."""
        if field.kind == FieldKind.COLUMN:
            return SweepRow.name if field.column == "sweep" else getattr(RunRow, field.column)
        if field.kind == FieldKind.STEP:
            return (
                select(func.max(SUMMARY.c.last_step)).where(SUMMARY.c.run_id == RunRow.id).scalar_subquery()
            )
        if field.kind == FieldKind.METRIC:
            stat = field.stat
            if stat.startswith("best"):
                stat = stat.replace("best", "min" if lower_is_better(field.metric) else "max")
            return self.summaries[field.metric].c[stat]
        return self.json.value(RunRow.config, field.path, want)

    def shown(self, field: Field) -> ColumnElement[Any]:
        """The field as a column of the result: config values as JSON text, the rest as they are."""
        if field.kind == FieldKind.CONFIG:
            return self.json.as_json(RunRow.config, field.path)
        return self.scalar(field, field.type)

    def missing(self, field: Field) -> ColumnElement[bool]:
        if field.kind == FieldKind.CONFIG:
            return self.json.missing(RunRow.config, field.path)
        if field.kind == FieldKind.METRIC:
            return self.summaries[field.metric].c.last.is_(None)
        return self.scalar(field, field.type).is_(None)

    # -- --where ---------------------------------------------------------------------------------------
    def where(self, text: str) -> ColumnElement[bool]:
        self.text, self.option = text, "--where"
        return self.condition(parse(text))

    def condition(self, node: Node) -> ColumnElement[bool]:
        if isinstance(node, And):
            return and_(*(self.condition(p) for p in node.parts))
        if isinstance(node, Or):
            return or_(*(self.condition(p) for p in node.parts))
        if isinstance(node, Not):
            return _negate(self.condition(node.part))
        return self.compare(node)

    def compare(self, node: Compare) -> ColumnElement[bool]:
        field = self.field(node.key, node.key_pos)
        want, values = check(field, node, self.text)
        if field.is_list:
            return self.contains(field, node.op, want, values)
        if want == ValueType.NULL:
            return self.missing(field) if node.op == "=" else not_(self.missing(field))
        value = self.scalar(field, want)
        if field.kind == FieldKind.CONFIG and want == BOOL:
            values = [int(v) for v in values]  # config booleans read as 1 / 0
        if node.op == "like":
            return self.json.like(value, values[0])
        if node.op == "in":
            return value.in_(values)
        if node.op in ("=", "!="):
            equal = value == values[0]
            return equal if node.op == "=" else _negate(equal)
        return COMPARE[node.op](self.json.ordered(value) if want == STR else value, values[0])

    def contains(self, field: Field, op: str, want: str, values: list[Any]) -> ColumnElement[bool]:
        """A list-valued key: = contains, in contains one of, like has an element that matches."""
        found, element = self.json.elements(RunRow.config, field.path, NUM if want == NUM else STR)

        def some(condition: Any = None) -> ColumnElement[bool]:
            return (found if condition is None else found.where(condition)).exists()

        if want == ValueType.NULL:  # = null: no elements at all
            return _negate(some()) if op == "=" else some()
        if op == "like":
            return some(self.json.like(element, values[0]))
        if op == "in":
            return some(element.in_(values))
        return some(element == values[0]) if op == "=" else _negate(some(element == values[0]))

    # -- --sort, --columns ---------------------------------------------------------------------------
    def order(self, text: str) -> list[Any]:
        self.text, self.option = text, "--sort"
        out, pos = [], 0
        for part in text.split(","):
            key, _, direction = part.strip().partition(":")
            at = pos + len(part) - len(part.lstrip())
            pos += len(part) + 1
            direction = direction.strip().lower() or "asc"
            if direction not in ("asc", "desc"):
                raise QueryError(
                    f"sort by KEY or KEY:desc, not {part.strip()!r}", text, at + len(key) + 1, "--sort"
                )
            field = self.field(key.strip(), at)
            if field.is_list:
                raise QueryError(f"{field.name} is a list and cannot be sorted by", text, at, "--sort")
            wants = (NUM, STR) if field.type == ANY else (field.type,)
            for want in wants:
                value = self.scalar(field, want)
                value = self.json.ordered(value) if want == STR else value
                ordered = value.desc() if direction == "desc" else value.asc()
                never_null = (
                    field.kind == FieldKind.COLUMN and field.column in NOT_NULL
                )  # (lets an index serve)
                out.append(ordered if never_null else ordered.nulls_last())
        return out

    def columns(self, names: Sequence[str]) -> list[Field]:
        self.text, self.option = ",".join(names), "--columns"
        starts = [sum(len(n) + 1 for n in names[:i]) for i in range(len(names))]
        return [self.field(name, pos) for name, pos in zip(names, starts, strict=True)]

    # -- metric keys ---------------------------------------------------------------------------------
    def check_metrics(self, session: Any) -> None:
        """Every metric key named must be one some run has logged: a typo is an error, not no runs."""
        if not self.used:
            return
        present = set(session.scalars(select(SUMMARY.c.key).where(SUMMARY.c.key.in_(self.used)).distinct()))
        for key, (option, text, pos) in self.used.items():
            if key in present:
                continue
            known = list(session.scalars(select(SUMMARY.c.key).distinct()))
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            fix = f"did you mean {' or '.join(close)}?" if close else (
                f"logged metrics include {', '.join(sorted(known)[:8])}" if known else "no run has logged metrics yet"
            )  # fmt: skip
            raise QueryError(f"no run has logged the metric {key!r}; {fix}", text, pos, option)


def _negate(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """The exact complement: a comparison with a missing value (SQL NULL) counts as false, then is negated."""
    return not_(func.coalesce(condition, false(), type_=Boolean))

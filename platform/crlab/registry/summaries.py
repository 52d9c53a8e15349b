"""Metric rows and the run summary kept beside them, written in one transaction.

``write_metrics`` is what a journal's ``metrics`` record does (:mod:`crlab.registry.journal`): the rows of
(run, key) at or after the step being logged are deleted first, so a resumed run, which replays the steps
after its checkpoint, replaces those rows instead of adding a second copy. The summary (``metric_summaries``: last, min and max, each with its
step, and the number of steps) is then upserted from the new values; when rows were replaced it is
recomputed from the metric rows of the keys logged, because a replaced value may have been the min or max.
The upsert is ``INSERT ... ON CONFLICT DO UPDATE``, which SQLite and PostgreSQL spell alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Integer, and_, case, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crlab.registry.models import MetricRow, MetricSummaryRow

SUMMARY = MetricSummaryRow.__table__
METRICS = MetricRow.__table__


def write_metrics(
    session: Session, run_id: str, step: int, values: Mapping[str, float], now: datetime
) -> None:
    """Replace the run's rows of these keys from ``step`` on with ``values`` and update their summary."""
    if not values:
        return
    keys = list(values)
    gone = session.execute(
        delete(METRICS).where(METRICS.c.run_id == run_id, METRICS.c.key.in_(keys), METRICS.c.step >= step)
    ).rowcount
    session.execute(
        insert(METRICS),
        [
            {"run_id": run_id, "step": step, "key": k, "value": float(v), "time": now}
            for k, v in values.items()
        ],
    )
    if gone:
        recompute(session, run_id, keys)
    else:
        session.execute(_upsert(session, run_id, step, values))


def _upsert(session: Session, run_id: str, step: int, values: Mapping[str, float]):  # noqa: ANN202
    """One INSERT .. ON CONFLICT for every key: a new step is later than every step already summarised
    (rows at or after it were deleted), so it is the new last; min and max move on a strict improvement."""
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows = [
        {"run_id": run_id, "key": k, "last": float(v), "last_step": step, "min": float(v), "min_step": step,
         "max": float(v), "max_step": step, "n": 1}
        for k, v in values.items()
    ]  # fmt: skip
    stmt = make(SUMMARY).values(rows)
    new, old = stmt.excluded, SUMMARY.c
    lower, higher = new.min < old.min, new.max > old.max
    return stmt.on_conflict_do_update(
        index_elements=[old.run_id, old.key],
        set_={
            "last": new.last, "last_step": new.last_step, "n": old.n + 1,
            "min": case((lower, new.min), else_=old.min), "min_step": case((lower, new.min_step), else_=old.min_step),
            "max": case((higher, new.max), else_=old.max), "max_step": case((higher, new.max_step), else_=old.max_step),
        },
    )  # fmt: skip


def recompute(session: Session, run_id: str, keys: list[str]) -> None:
    """Rebuild the summary of ``keys`` of ``run_id`` from its metric rows."""
    session.execute(delete(SUMMARY).where(SUMMARY.c.run_id == run_id, SUMMARY.c.key.in_(keys)))
    query = summary_select(and_(METRICS.c.run_id == run_id, METRICS.c.key.in_(keys)))
    session.execute(insert(SUMMARY).from_select(list(query.selected_columns.keys()), query))


def summary_select(where):  # noqa: ANN001, ANN201 - a SQL condition on the metrics table; a Select
    """The summary rows of the metric rows matching ``where``: one row per (run, key), as
    ``metric_summaries`` holds them (window functions, the same SQL on SQLite and PostgreSQL)."""
    m = METRICS.c

    def rank(*order):  # noqa: ANN002, ANN202 - 1 for the row that comes first in this order, per (run, key)
        return func.row_number().over(partition_by=(m.run_id, m.key), order_by=order)

    ranked = (
        select(
            m.run_id,
            m.key,
            m.step,
            m.value,
            rank(m.step.desc(), m.id.desc()).label("r_last"),
            rank(m.value, m.step).label("r_min"),
            rank(m.value.desc(), m.step).label("r_max"),
        )
        .where(where)
        .subquery()
    )

    def at(first: str, column: str):  # noqa: ANN202 - the column's value in the row ranked first
        return func.max(case((ranked.c[first] == 1, ranked.c[column])))

    return select(
        ranked.c.run_id, ranked.c.key,
        at("r_last", "value").label("last"), at("r_last", "step").label("last_step"),
        func.min(ranked.c.value).label("min"), at("r_min", "step").label("min_step"),
        func.max(ranked.c.value).label("max"), at("r_max", "step").label("max_step"),
        func.count().cast(Integer).label("n"),
    ).group_by(ranked.c.run_id, ranked.c.key)  # fmt: skip

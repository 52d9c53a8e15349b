"""An ablation table in one query: a metric of a sweep's runs, grouped by the swept keys, aggregated in
the database (``GROUP BY`` the config values; mean, sample standard deviation and count in SQL).

The metric of a run is read from its summary (``metric_summaries``), never from the metric rows:
``at="best"`` is its best value (the highest; the lowest for a loss), which for ``eval/pass@1`` is the
value at the best checkpoint as the paper picks it; ``at="last"`` its final value. Only completed runs
count; the others (running, failed, pruned) are counted apart, so a table never silently mixes a
half-trained run into a mean. The standard deviation is the sample one (n-1), computed from sums in SQL
(SQLite has no ``stddev``), and is absent for a group of one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select

from crlab.errors import CrlabError
from crlab.registry import db
from crlab.registry.entities import RunStatus
from crlab.registry.models import RunRow
from crlab.registry.query import Compiler
from crlab.registry.query_keys import NUM
from crlab.registry.store import Registry

AT = ("best", "last")


@dataclass(frozen=True)
class AblationRow:
    values: tuple[Any, ...]  # the group's value of each --by key
    mean: float
    std: float | None  # sample std (n-1); None for n=1
    n: int
    runs: tuple[str, ...]
    # from the per-problem records (crlab.registry.ablation_stats); None where a row has none
    ci95: tuple[float, float] | None = None  # the mean's 95% interval (seeds, then problems)
    delta: float | None = None  # the paired difference from the row's baseline
    delta_ci95: tuple[float, float] | None = None
    p: float | None = None  # paired test of delta == 0 (crlab.stats.paired: t over seeds, or permutation)
    p_holm: float | None = None  # p, Holm-adjusted over the rows compared
    significant: bool | None = None  # p_holm < 0.05
    gain: float | None = None  # the paired difference from the base model (step 0)
    gain_ci95: tuple[float, float] | None = None
    baseline: bool = False  # the row the others are compared with

    def stats_json(self) -> dict[str, Any]:
        pair = lambda v: None if v is None else list(v)  # noqa: E731
        return {
            "mean": self.mean, "std": self.std, "n": self.n, "ci95": pair(self.ci95), "delta": self.delta,
            "delta_ci95": pair(self.delta_ci95), "p": self.p, "p_holm": self.p_holm,
            "significant": self.significant, "gain": self.gain, "gain_ci95": pair(self.gain_ci95),
            "baseline": self.baseline, "runs": list(self.runs),
        }  # fmt: skip


@dataclass(frozen=True)
class Ablation:
    sweep: str
    metric: str
    at: str
    by: tuple[str, ...]
    rows: list[AblationRow]
    left_out: dict[str, int] = field(default_factory=dict)  # status -> runs not counted
    base: AblationRow | None = None  # the base model (step 0), when the runs evaluated it
    baseline: dict[str, Any] | None = None  # {"key": ..., "value": ...}: what delta is measured from
    notes: list[str] = field(default_factory=list)  # how the figures were computed, and what is missing
    power: dict[str, Any] | None = None  # crlab.registry.ablation_stats.power_of

    def to_json(self) -> dict:
        return {
            "sweep": self.sweep, "metric": self.metric, "at": self.at, "by": list(self.by),
            "baseline": self.baseline,
            "rows": [{**dict(zip(self.by, r.values, strict=True)), **r.stats_json()} for r in self.rows],
            "base": None if self.base is None else self.base.stats_json(),
            "power": self.power, "notes": self.notes, "left_out": self.left_out,
        }  # fmt: skip


def swept_keys(spec: dict[str, Any]) -> tuple[str, ...]:
    """The keys a sweep's grid varies (its seeds excepted)."""
    grid = spec.get("grid") or {}
    return tuple(k for k in grid if k != "seed")


def _config_key(key: str) -> str:
    return key if key.startswith("config.") else f"config.{key}"


def _agg_ids(dialect: str, column: Any) -> Any:
    return func.string_agg(column, ",") if dialect == "postgresql" else func.group_concat(column, ",")


def ablation(
    registry: Registry, sweep_ref: str, metric: str, at: str = "best", by: Sequence[str] = ()
) -> Ablation:
    """One row per combination of ``by`` values among the sweep's completed runs that logged ``metric``."""
    if at not in AT:
        raise CrlabError(f"--at {at!r}: expected best or last")
    sweep = registry.get_sweep(sweep_ref)
    by = tuple(by) or swept_keys(sweep.spec)
    if not by:
        raise CrlabError(f"sweep {sweep.name} has no grid keys; name the key to group by with --by KEY")
    dialect = registry.engine.dialect.name
    sql = Compiler(dialect)
    sql.option, sql.text = "--by", ",".join(by)
    groups = [sql.shown(sql.field(_config_key(k), 0)).label(f"g{i}") for i, k in enumerate(by)]
    sql.option, sql.text = "--metric", metric
    value = sql.scalar(sql.field(f"metrics.{metric}.{at}", 0), NUM)
    summary = sql.summaries[metric]
    query = (
        select(*groups, func.count(value), func.avg(value), func.sum(value * value), _agg_ids(dialect, RunRow.id))
        .join(summary, and_(summary.c.run_id == RunRow.id, summary.c.key == metric))
        .where(RunRow.sweep_id == sweep.id, RunRow.status == RunStatus.COMPLETED.value, value.is_not(None))
        .group_by(*groups)
    )  # fmt: skip
    left = select(RunRow.status, func.count()).where(RunRow.sweep_id == sweep.id)
    left = left.where(RunRow.status != RunStatus.COMPLETED.value).group_by(RunRow.status)
    with db.session_scope(registry.engine) as s:
        sql.check_metrics(s)
        found = s.execute(query).all()
        left_out = {str(status): int(count) for status, count in s.execute(left).all()}
    rows = sorted((_row(r, len(by)) for r in found), key=lambda r: [_order(v) for v in r.values])
    return Ablation(sweep.name, metric, at, by, rows, left_out)


def _row(row: Any, width: int) -> AblationRow:
    values = tuple(None if v is None else json.loads(v) for v in row[:width])
    n, mean, squares, ids = int(row[width]), float(row[width + 1]), float(row[width + 2]), row[width + 3]
    std = math.sqrt(max(0.0, (squares - n * mean * mean) / (n - 1))) if n > 1 else None
    return AblationRow(values, mean, std, n, tuple(sorted(ids.split(","))))


def _order(value: Any) -> tuple:
    """Numbers before text before null, each in its natural order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, json.dumps(value)) if value is not None else (2, 0, "")

"""Rich renderings for the CLI: tables of runs and sweep cells, and one run's panel."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table

from crlab.registry.entities import EventKind
from crlab.registry.journal import unsent

STATUS_STYLE = {
    "pending": "dim",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "preempted": "yellow",
    "killed": "magenta",
    "pruned": "dim yellow",
}
HEADLINE_METRICS = ("reward/rl_mean", "reward/crl_mean", "critique/accuracy", "eval/pass@1")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, '')}]{status}[/]"


# ``runs list`` columns, most important first: on a narrow terminal the last ones are dropped first.
RUN_COLUMNS = ("id", "status", "name", "step", "reward/rl_mean", "sweep", "attempt", "created", "heartbeat")
ALWAYS_SHOWN = 2  # id and status are never dropped
FOLDED = ("name", "sweep")  # a long name or sweep name folds onto more lines ...
FOLD_AT = 24  # ... and counts as this many characters when deciding which columns fit


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: ``"45s ago"``, ``"3m ago"``, ``"2h ago"``, ``"5d ago"``."""
    if value is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _run_cells(
    r: Any, metrics: dict[str, tuple[int, float]], sweeps: dict[str, str], wide: bool, now: datetime
) -> dict[str, str]:
    step = max((s for s, _ in metrics.values()), default=None)
    reward = metrics.get("reward/rl_mean")
    when = _when if wide else (lambda value: ago(value, now))
    return {
        "id": r.id, "status": _status(r.status), "name": r.name,
        "step": "-" if step is None else str(step), "reward/rl_mean": "-" if reward is None else f"{reward[1]:.3f}",
        "sweep": sweeps.get(r.sweep_id, r.sweep_id) if r.sweep_id else "-", "attempt": str(r.attempt),
        "created": when(r.created_at), "heartbeat": when(r.heartbeat_at),
    }  # fmt: skip


def _table(title: str, columns: tuple[str, ...], rows: list[dict[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = column in ("step", "reward/rl_mean", "attempt")
        wraps = column in FOLDED
        overflow = "fold" if wraps else "ellipsis"
        table.add_column(column, no_wrap=not wraps, overflow=overflow, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


def runs_table(
    runs: list[Any], latest: dict[str, dict[str, tuple[int, float]]], console: Console,
    sweeps: dict[str, str] | None = None, wide: bool = False, now: datetime | None = None,
    columns: list[str] | None = None, values: list[dict[str, Any]] | None = None,
) -> Table:  # fmt: skip
    """Runs, one per row, that fit ``console``'s width without cutting a cell.

    Times are relative ("3m ago"); columns are dropped from the end of :data:`RUN_COLUMNS` until the table
    fits (names longer than ``FOLD_AT`` fold onto more lines rather than push columns out). ``wide`` keeps every column and shows full timestamps. ``sweeps`` maps sweep ids to names.
    ``columns`` (with each run's ``values``, from ``runs list --columns``) replaces the default columns;
    none of those is dropped, long cells fold instead.
    """
    now = now or datetime.now(timezone.utc)
    title = f"{len(runs)} run(s)"
    if columns:
        return _chosen_table(title, columns, values or [], wide, now)
    rows = [_run_cells(r, latest.get(r.id, {}), sweeps or {}, wide, now) for r in runs]
    columns = list(RUN_COLUMNS)
    probe = [{k: v[:FOLD_AT] if k in FOLDED else v for k, v in row.items()} for row in rows]
    unbounded = console.options.update_width(10_000)
    while not wide and len(columns) > ALWAYS_SHOWN:
        if Measurement.get(console, unbounded, _table(title, tuple(columns), probe)).maximum <= console.width:
            break
        columns = columns[:-1]
    return _table(title, tuple(columns), rows)


def _chosen_table(
    title: str, columns: list[str], values: list[dict[str, Any]], wide: bool, now: datetime
) -> Table:
    """``runs list --columns``: numbers right-aligned to 4 significant digits, a missing value as ``-``."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        numeric = any(
            isinstance(v.get(column), int | float) and not isinstance(v.get(column), bool) for v in values
        )
        table.add_column(column, overflow="fold", justify="right" if numeric else "left")
    for row in values:
        table.add_row(*(_chosen_cell(column, row.get(column), wide, now) for column in columns))
    return table


def _chosen_cell(column: str, value: Any, wide: bool, now: datetime) -> str:
    if value is None:
        return "-"
    if column == "status":
        return _status(value)
    if isinstance(value, datetime):
        return _when(value) if wide else ago(value, now)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return escape(str(value))


def cells_table(spec: Any, cells: list[Any], plans: list[dict[str, Any]] | None = None) -> Table:
    """The cells of a sweep's dry run; with ``plans`` (``train.setup.plan`` per cell), the steps and rows
    each will draw, so a difference in data budget shows before it costs anything."""
    table = Table(title=f"sweep {spec.name}: {len(cells)} cell(s), base {spec.base}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("cell key", no_wrap=True)
    table.add_column("cell", overflow="fold", min_width=20)
    pooled = any("pool" in p for p in plans or [])  # data.budget=pool: the pool's N, split by the ratio
    for name in ("steps", "rows", "RL rows", "CRL rows") if plans else ():
        table.add_column(name, justify="right")
    if pooled:
        table.add_column("pool (RL + CRL)", justify="right")
    for i, cell in enumerate(cells):
        planned = plans[i] if plans else {}
        bound = "" if planned.get("exact", True) else "≤ "  # a plateau switch with switch.restart=fresh
        extra = [bound + str(planned[k]) for k in ("steps", "rows", "rl_rows", "crl_rows")] if planned else []
        table.add_row(str(i), cell.key, cell.label, *extra, *([str(planned.get("pool", "-"))] if pooled else []))
    return table


def search_table(spec: Any) -> Table:
    search = spec.search
    judged = {"best": "its best value", "last": "its final value"}.get(search.select or "")
    title = (
        f"search {spec.name}: {search.n_trials} trial(s), {search.sampler} sampler, {search.direction} "
        f"{search.metric} ({judged or f'mean of the last {search.last_k} steps'}), base {spec.base}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("param")
    table.add_column("distribution")
    for key, dist in search.params.items():
        table.add_row(key, ", ".join(f"{k}={v}" for k, v in dist.items()))
    pruner = ", ".join(f"{k}={v}" for k, v in search.pruner.items())
    table.caption = f"pruner: {pruner}; prune on {search.prune_on or '-'}"
    return table


# checkpoints have their own table; the per-problem records of evaluations and the sweep process watching a
# run are in `runs show --json`
HIDDEN_EVENTS = (EventKind.CHECKPOINT, EventKind.EVAL_PROBLEMS, EventKind.SWEEP_WATCH)


def best_checkpoint_json(registry: Any, run: Any) -> dict[str, Any] | None:
    """The run's best checkpoint: its step and path, the metric that picked it (``eval.select``) and its
    value at that step; None when no checkpoint is flagged best (no evaluation during training)."""
    from crlab.config_checks import selection_metric

    best = registry.best_checkpoint(run.id)
    if best is None:
        return None
    ev = run.config.get("eval") or {}
    key = selection_metric(ev)
    report = "eval/" + key.removeprefix("val/") if key.startswith("val/") else key  # the reported set's own
    found = {m.key: m.value for m in registry.metrics(run.id, keys=[key, report]) if m.step == best.step}
    return {
        "step": best.step, "path": best.path, "metric": key, "value": found.get(key),
        "selected_on": ev.get("select_source") or ev.get("source"), "reported_on": ev.get("source"),
        "reported": {"metric": report, "value": found.get(report)},
        "same_set": not ev.get("select_source"),
    }  # fmt: skip


def run_panel(
    run: Any, latest: dict[str, tuple[int, float]], events: list[Any], checkpoints: list[Any],
    best: dict[str, Any] | None = None, sweep: str | None = None,
) -> Group:  # fmt: skip
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    rows = [
        ("name", run.name), ("status", _status(run.status)), ("attempt", str(run.attempt)),
        ("sweep / cell", f"{sweep or run.sweep_id or '-'} / {run.cell_key or '-'}"),
        ("host / pid / job", f"{run.host or '-'} / {run.pid or '-'} / {run.job_id or '-'}"),
        ("git", f"{run.git_commit or '-'}{' (dirty)' if run.git_dirty else ''}"),
        ("W&B run", run.wandb_run_id or "-"), ("run dir", run.run_dir or "-"),
        ("created / started / ended", f"{_when(run.created_at)} / {_when(run.started_at)} / {_when(run.ended_at)}"),
        ("heartbeat", _when(run.heartbeat_at)),
    ]  # fmt: skip
    rows += _provenance_rows(run)
    if run.error:
        rows.append(("error", f"[red]{run.error}[/]"))
    if best:
        rows.append(("best checkpoint", f"step {best['step']} ({_best_text(best)})"))
    if pending := unsent(run.run_dir, run.journal_seq):
        rows.append(("unsent records", f"[yellow]{pending} in its journal: `platform runs sync {run.id}`[/]"))
    for key, value in rows:
        info.add_row(key, value)
    parts: list[Any] = [Panel(info, title=f"run {run.id}", title_align="left", expand=False)]
    if latest:
        metrics = Table(title="latest metrics", title_justify="left")
        for column in ("metric", "step", "value"):
            metrics.add_column(column)
        ordered = sorted(latest, key=lambda k: (k not in HEADLINE_METRICS, k))
        for key in ordered:
            step, value = latest[key]
            metrics.add_row(key, str(step), f"{value:.4g}")
        parts.append(metrics)
    shown = [e for e in events if e.kind not in HIDDEN_EVENTS]
    if shown:
        table = Table(title="events (checkpoints: below)", title_justify="left")
        for column in ("time", "step", "kind", "payload"):
            table.add_column(column)
        for e in shown:
            payload = ", ".join(f"{k}={v}" for k, v in e.payload.items())
            table.add_row(_when(e.time), "-" if e.step is None else str(e.step), e.kind, payload)
        parts.append(table)
    if checkpoints:
        table = Table(title="checkpoints", title_justify="left")
        for column in ("step", "complete", "best", "path"):
            table.add_column(column)
        for c in checkpoints:
            flag = f"[green]best[/] {_best_text(best)}" if best and c.step == best["step"] else ""
            table.add_row(str(c.step), "yes" if c.complete else "[yellow]partial[/]", flag, c.path)
        parts.append(table)
    return Group(*parts)


def _provenance_rows(run: Any) -> list[tuple[str, str]]:
    """The run it reproduces, its uncommitted diff's hash and its data (full record: `runs show --json`)."""
    made = run.provenance or {}
    rows = [("reproduces", run.reproduces)] if run.reproduces else []
    if (made.get("git") or {}).get("diff_sha256"):
        rows.append(("uncommitted diff", f"sha256 {made['git']['diff_sha256'][:16]}"))
    for key, entry in (made.get("data") or {}).items():
        sha = entry.get("sha256")
        what = f"sha256 {sha[:16]}" if sha else ("missing" if entry.get("path") else "")
        if entry.get("generator"):
            what = f"{entry['generator']} {entry['version']}" + (f", {what}" if what else "")
        rows.append((key, escape(f"{entry['source']} ({what})")))
    return rows


def _best_text(best: dict[str, Any]) -> str:
    value = "-" if best["value"] is None else f"{best['value']:.4g}"
    text = f"{best['metric']} {value}"
    if best.get("same_set", False):
        where = best.get("selected_on")
        return f"{text}; selected and reported on the same set, {where}" if where else text
    reported = best.get("reported") or {}
    if best.get("selected_on") and reported.get("value") is not None:
        text += f" on {best['selected_on']}; reported {reported['metric']} {reported['value']:.4g} on "
        text += f"{best.get('reported_on')}"
    return text


def doctor_table(checks: list[Any]) -> Table:
    """`platform doctor`: each part, ok or missing, what was found and how to fix it."""
    table = Table(title="can runs work here?", title_justify="left")
    for column in ("part", "status", "found", "fix"):
        table.add_column(column, no_wrap=column in ("part", "status"), overflow="fold")
    for c in checks:
        table.add_row(c.part, "[green]ok[/]" if c.ok else "[red]missing[/]", c.detail, c.fix or "")
    return table

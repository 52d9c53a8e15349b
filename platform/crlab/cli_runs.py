"""`platform runs compare`, `platform runs sync` and `platform reproduce`, registered in cli.py, with their Rich
renderings."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from crlab.cli_options import DbOpt, JsonOpt, err, out, print_json

STATS = ("last", "min", "max", "best")


def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="Two or more run ids (or unique prefixes).")],
    db: DbOpt = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics", help="Comma-separated metric keys to show, e.g. reward/rl_mean,eval/pass@1."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Compare runs: the config keys that differ, metric summaries (last/min/max/best) side by side, events."""
    from crlab.registry import Registry
    from crlab.registry.compare import compare_runs
    from crlab.registry.query import split_columns

    keys = split_columns(metrics) if metrics else None
    with Registry(db) as reg:
        found = compare_runs(reg, runs, keys)
    if json_out:
        print_json(found)
    else:
        out.print(compare_view(found))


def runs_sync(
    runs: Annotated[list[str], typer.Argument(help="Run ids (or unique prefixes) whose journals to send.")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Send what a run's journal holds and the registry lacks (a run that ended while the registry was
    unreachable). Safe to repeat: each record is applied once."""
    from crlab.registry import Registry
    from crlab.registry.journal import replay, unsent

    sent: dict[str, dict[str, int]] = {}
    with Registry(db, replay_journals=False) as reg:
        for ref in runs:
            run = reg.get_run(ref)
            count = replay(reg.engine, run.id, run.run_dir)
            sent[run.id] = {"sent": count, "unsent": unsent(run.run_dir, reg.get_run(run.id).journal_seq)}
    if json_out:
        print_json(sent)
        return
    for run_id, counts in sent.items():
        out.print(f"run {run_id}: sent {counts['sent']} record(s); {counts['unsent']} left unsent")


def _value(value: Any) -> str:
    if value is None:
        return "[dim]-[/]"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return escape(value)
    return escape(json.dumps(value))


def compare_view(found: dict[str, Any]) -> Group:
    """The config diff, the metric summaries and the events of ``compare_runs``' result."""
    ids = [r["id"] for r in found["runs"]]
    heads = [f"{r['id']}\n{escape(r['name'])} ({r['status']})" for r in found["runs"]]
    config = Table(title=f"config: {len(found['config'])} key(s) differ", title_justify="left")
    config.add_column("key", overflow="fold")
    for head in heads:
        config.add_column(head, overflow="fold")
    for key, values in found["config"].items():
        config.add_row(key, *(_value(v) for v in values))
    parts: list[Any] = [config]
    metrics = Table(title=f"metrics: {len(found['metrics'])} key(s)", title_justify="left")
    metrics.add_column("metric", overflow="fold")
    metrics.add_column("")
    for head in heads:
        metrics.add_column(head, justify="right", no_wrap=True)
    for key, summaries in found["metrics"].items():
        for i, stat in enumerate(STATS):
            cells = ["[dim]-[/]" if s is None else f"{s[stat]:.4g} @{s[f'{stat}_step']}" for s in summaries]
            metrics.add_row(escape(key) if i == 0 else "", stat, *cells, end_section=i == len(STATS) - 1)
    parts.append(metrics)
    events = Table(title=f"events: {len(found['events'])}", title_justify="left")
    for column in ("run", "step", "kind", "payload"):
        events.add_column(column, overflow="fold")
    for e in sorted(found["events"], key=lambda e: (ids.index(e["run"]), e["step"] is None, e["step"] or 0)):
        step = "-" if e["step"] is None else str(e["step"])
        events.add_row(e["run"], step, e["kind"], escape(json.dumps(e["payload"])))
    parts.append(events)
    return Group(*parts)


def reproduce_command(
    run_id: Annotated[str, typer.Argument(help="The run to reproduce (an id or a unique prefix).")],
    db: DbOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Start it even though code, diff or data differ (recorded).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every check and the differences; start nothing.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Start a new run with a run's resolved config, linked to it; refused (exit 2) when the code commit,
    the uncommitted diff or the data files differ from the original's, unless --force."""
    from crlab.registry import Registry
    from crlab.reproduce import plan_reproduction

    with Registry(db) as reg:
        run, url = reg.get_run(run_id), reg.url
    plan = plan_reproduction(run)
    refused = bool(plan.differences) and not force
    if dry_run:
        if json_out:
            print_json(plan.to_json(force))
        else:
            out.print(plan_table(plan, force))
        if refused:
            raise typer.Exit(2)
        return
    if refused:
        raise plan.refusal()
    for check in [*plan.differences, *plan.notes]:
        what = "forced past" if check.refuses else "note"
        err.print(f"[yellow]{what}:[/] {escape(check.line())}", highlight=False)
    _start(plan, url, force)


def _start(plan: Any, url: str, force: bool) -> None:
    """The same path as `platform run`: config warnings, the preflight, then ``launch_run``."""
    from crlab.config_checks import config_warnings
    from crlab.preflight import preflight, require
    from crlab.train.loop.run import launch_run

    for warning in config_warnings(plan.config):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    require(preflight([plan.config], url))
    launch_run(plan.config, db_url=url, reproduces=plan.record(force))


def _short(text: str) -> str:
    """sha256 digests and commits cut to 16 hex digits (in full in the refusal and in --json)."""
    return re.sub(r"\b([0-9a-f]{16})[0-9a-f]{24,48}\b", r"\1…", text)


def plan_table(plan: Any, force: bool) -> Table:
    """`reproduce --dry-run`: each check, original against now, and what a difference does."""
    n = len(plan.differences)
    verdict = (
        "would start" if not n else f"would start, forced past {n} difference(s)" if force
        else f"would refuse: {n} difference(s)"
    )  # fmt: skip
    table = Table(
        title=f"reproduce run {plan.run.id} ({escape(plan.run.name)}): {verdict}", title_justify="left"
    )
    for column in ("check", "original", "now", ""):
        table.add_column(column, overflow="fold")
    for c in plan.checks:
        result = (
            "[green]same[/]" if c.same else "[red]differs[/]" if c.refuses else "[yellow]differs (noted)[/]"
        )
        table.add_row(escape(c.name), escape(_short(c.original)), escape(_short(c.now)), result)
    return table

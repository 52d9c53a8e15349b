"""The `platform` command.

Every command that lists or shows something takes ``--json``. Errors the user can fix print one line on
stderr and exit with code 2; nothing is written to the registry before the input has been checked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from crlab import __version__
from crlab.cli_data import data_app, model_app
from crlab.cli_doctor import doctor_command
from crlab.cli_eval import eval_command
from crlab.cli_options import DbOpt, JsonOpt, OverridesArg, err, out, print_json
from crlab.cli_report import ablation_command, sync_command
from crlab.cli_runs import reproduce_command, runs_compare, runs_sync
from crlab.errors import CrlabError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    help="Critique-RL research platform: train coder LLMs with GRPO + CRL, sweep ablations, query runs.",
)
runs_app = typer.Typer(no_args_is_help=True, help="List and inspect runs in the registry.")
db_app = typer.Typer(no_args_is_help=True, help="Create, migrate and inspect the registry database.")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(model_app, name="model")
app.command("eval")(eval_command)
app.add_typer(data_app, name="data")
app.command("reproduce")(reproduce_command)
runs_app.command("compare")(runs_compare)
runs_app.command("sync")(runs_sync)
app.command("ablation")(ablation_command)
app.command("sync")(sync_command)
app.command("doctor")(doctor_command)

NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Data-parallel ranks on this machine (one per GPU), started by the DeepSpeed launcher.",
    ),
]


def _version(value: bool) -> None:
    if value:
        out.print(f"crlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Critique-RL research platform."""


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. experiments/tiny_coder.yaml.")],
    overrides: OverridesArg = None,
    db: DbOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and print the resolved config and its memory per GPU only.")
    ] = False,
    json_out: JsonOpt = False,
    nproc: NprocOpt = 1,
) -> None:
    """Train one GRPO+CRL run from an experiment file (plus key=value overrides)."""
    from crlab import config as cfgmod
    from crlab.config_checks import config_warnings

    cfg = cfgmod.load_config(config, overrides or [])
    for warning in config_warnings(cfg):
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if dry_run:
        from crlab.train.engine.memory import dry_run_report

        text, memory = dry_run_report(cfg, nproc)  # memory per GPU at the config's shapes
        if json_out:
            print_json({**cfgmod.to_dict(cfg), "memory_per_gpu": memory})
        else:
            sys.stdout.write(cfgmod.to_yaml(cfg) + text)
        return
    _preflight([cfg], db)
    if nproc > 1:
        from crlab.train.engine.launch import launch_parallel

        raise typer.Exit(launch_parallel(cfg, nproc, db_url=db))
    from crlab.train.loop.run import launch_run

    launch_run(cfg, db_url=db)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue (an id or a unique prefix).")],
    db: DbOpt = None,
    claimed: Annotated[bool, typer.Option("--claimed", hidden=True)] = False,
    nproc: NprocOpt = 1,
) -> None:
    """Continue an interrupted run from its newest complete checkpoint."""
    if nproc > 1:
        import os

        from crlab.train.engine.launch import run_ranks
        from crlab.train.loop.run import take

        found = take(run_id, db, claimed)
        if found is not None:
            registry, run = found
            raise typer.Exit(run_ranks(run.id, nproc, {**os.environ, "CRLAB_DB_URL": registry.url}))
        return
    from crlab.train.loop.run import resume_run

    resume_run(run_id, db_url=db, claimed=claimed)


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep YAML, e.g. sweeps/crl_ratio.yaml.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Spec overrides, e.g. base=experiments/critique_coder_qwen3_4b.yaml."),
    ] = None,
    db: DbOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the cells; run and register nothing.")
    ] = False,
    json_out: JsonOpt = False,
    every: Annotated[
        int,
        typer.Option("--every", min=1, help="Off a terminal: a progress line every N steps of each cell."),
    ] = 10,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not wait for cells another live sweep runs (exit 3 if any).")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Failed cells get max_retries + 1 more attempts (from checkpoints)."),
    ] = False,
) -> None:
    """Run every cell of a sweep exactly once (rerun to resume); --dry-run lists the cells.

    Exit code: 0 every cell completed; 1 a cell failed; 2 the environment or the config; 3 returned before
    the end (--no-wait, a stop, or a registry that stayed unreachable), naming the cells still running."""
    from crlab.sweeps.spec import expand, load_spec

    sweep_spec = load_spec(spec, overrides or [])
    if sweep_spec.search is not None:
        if no_wait or retry_failed:
            raise CrlabError("--no-wait and --retry-failed are for grid sweeps; a search sweep takes neither")
        _search(sweep_spec, db, dry_run, json_out, every)
        return
    cells = expand(sweep_spec)
    from crlab import config as cfgmod
    from crlab.config_checks import config_warnings

    configs = [cfgmod.from_dict(c.config) for c in cells]
    if not dry_run:
        _preflight(configs, db, sweep_spec.executor)  # a sweep that cannot start says one line only
    for warning in dict.fromkeys(w for cfg in configs for w in config_warnings(cfg)):  # each once
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if dry_run:
        _dry_run(sweep_spec, cells, json_out)
        return
    from crlab.sweeps.runner import run_sweep

    code = run_sweep(
        sweep_spec, cells, db_url=db, json_out=json_out, every=every, wait=not no_wait, retry_failed=retry_failed
    )
    if not json_out:
        from crlab.cli_report import print_sweep_ablation

        print_sweep_ablation(sweep_spec.name, db, sweep_spec.metric, sweep_spec.select)
    if code:
        raise typer.Exit(code)


def _dry_run(sweep_spec: Any, cells: list[Any], json_out: bool) -> None:
    """The cells, with the steps and rows each will draw; nothing registered."""
    from crlab.cli_views import cells_table

    plans = _plans(cells)
    if json_out:
        cells_json = [{**_cell_json(c), "plan": p} for c, p in zip(cells, plans, strict=True)]
        print_json({"sweep": sweep_spec.to_json(), "cells": cells_json})
    else:
        out.print(cells_table(sweep_spec, cells, plans))


def _search(sweep_spec: Any, db: str | None, dry_run: bool, json_out: bool, every: int) -> None:
    from crlab.cli_views import search_table

    if dry_run:
        if json_out:
            print_json({"sweep": sweep_spec.to_json()})
        else:
            out.print(search_table(sweep_spec))
        return
    from crlab.sweeps.search import run_search

    _preflight([sweep_spec.base_config()], db, sweep_spec.executor)
    if run_search(sweep_spec, db_url=db, json_out=json_out, every=every):
        raise typer.Exit(1)


def _preflight(configs: list[Any], db: str | None, executor: Any = None) -> None:
    """Check every part these configs (and the sweep's executor) need before anything is registered: one
    line and exit 2 if one is missing."""
    from crlab.preflight import preflight, require

    if executor is not None:
        from crlab.sweeps.executor_factory import make_executor

        make_executor(executor)  # no sbatch, a misspelt submitit parameter: said first, it is the cheapest
    require(preflight(configs, db))


def _plans(cells: list[Any]) -> list[dict[str, int]]:
    """Each cell's steps and rows (reads the data sources; no model)."""
    from crlab import config as cfgmod
    from crlab.train.loop.setup import plan

    return [plan(cfgmod.from_dict(c.config)) for c in cells]


def _cell_json(cell: Any) -> dict[str, Any]:
    return {"key": cell.key, "label": cell.label, "overrides": cell.overrides, "seed": cell.seed}


@runs_app.command("list")
def runs_list(
    db: DbOpt = None,
    sweep: Annotated[str | None, typer.Option(help="Only runs of this sweep (id or name).")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help='Only runs matching this expression, e.g. "config.data.crl_ratio >= 0.2 and '
            "metrics.reward/rl_mean.last > 0.5 and not status = 'failed'\" (see the README's queries).",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated keys to show, e.g. id,status,config.data.crl_ratio,metrics.eval/pass@1.best."
        ),
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(help="Order by KEY or KEY:desc (comma-separated keys); default oldest first."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many runs: the newest, unless --sort.")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column, with full timestamps, however narrow the terminal.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List runs (oldest first) with their status and latest reward, or the ones --where picks, with
    --columns of your choice; a narrow terminal drops default columns."""
    from crlab.cli_views import runs_table
    from crlab.registry import Registry
    from crlab.registry.query import find_runs, split_columns

    chosen = split_columns(columns) if columns else []
    with Registry(db) as reg:
        sweep_id = reg.get_sweep(sweep).id if sweep else None
        found = find_runs(
            reg, where, sort=sort, limit=limit, columns=chosen, sweep_id=sweep_id, status=status
        )
        latest = {} if chosen else reg.latest_metrics_of(f.id for f in found)
    if json_out and chosen:
        print_json(
            [{k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in f.values.items()} for f in found]
        )
    elif json_out:
        rows = []
        for f in found:
            row = f.to_json()
            row.pop("values")
            row["latest_metrics"] = {k: v for k, (_, v) in latest.get(f.id, {}).items()}
            rows.append(row)
        print_json(rows)
    else:
        sweeps = {f.sweep_id: f.sweep for f in found if f.sweep_id and f.sweep}
        values = [f.values for f in found] if chosen else None
        out.print(
            runs_table(found, latest, out, sweeps=sweeps, wide=wide, columns=chosen or None, values=values)
        )


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="A run id or a unique prefix.")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one run: provenance, latest metrics, events and checkpoints (the best one flagged, with its metric)."""
    from crlab.cli_views import best_checkpoint_json, run_panel
    from crlab.registry import Registry

    with Registry(db) as reg:
        r = reg.get_run(run_id)
        latest = reg.latest_metrics(r.id)
        events = reg.events(r.id)
        checkpoints = reg.checkpoints(r.id)
        best = best_checkpoint_json(reg, r)
        sweep = f"{reg.get_sweep(r.sweep_id).name} ({r.sweep_id})" if r.sweep_id else None
    if json_out:
        print_json(
            {
                **r.to_json(),
                "latest_metrics": {k: {"step": s, "value": v} for k, (s, v) in latest.items()},
                "events": [e.to_json() for e in events],
                "checkpoints": [c.to_json() for c in checkpoints],
                "best_checkpoint": best,
            }
        )
    else:
        out.print(run_panel(r, latest, events, checkpoints, best, sweep))


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Migrate the registry to this platform's schema (creates it in an empty database)."""
    from crlab.registry import db as regdb

    url = regdb.resolve_db_url(db)
    before, after = regdb.upgrade(url)
    if json_out:
        print_json({"url": regdb.display_url(url), "from": before, "to": after})
    elif before == after:
        out.print(f"{regdb.display_url(url)}: already at revision {after}")
    else:
        out.print(f"{regdb.display_url(url)}: upgraded {before or '(empty)'} -> {after}")


@db_app.command("current")
def db_current(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Show the registry's URL, its schema revision and whether it is up to date."""
    from crlab.registry import db as regdb

    url = regdb.resolve_db_url(db)
    engine = regdb.make_engine(url)
    regdb.check_reachable(engine)
    current, head = regdb.current_revision(engine), regdb.head_revision(url)
    engine.dispose()
    state = "up to date" if current == head else "needs `platform db upgrade`"
    if json_out:
        print_json(
            {"url": regdb.display_url(url), "current": current, "head": head, "up_to_date": current == head}
        )
    else:
        out.print(f"{regdb.display_url(url)}: revision {current or '(empty)'}, head {head}: {state}")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except CrlabError as exc:  # sandbox, data-format, test-spec, config and registry errors alike
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)

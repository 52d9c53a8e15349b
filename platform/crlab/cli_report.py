"""`platform ablation`: a sweep's ablation table (mean over seeds per swept value, its 95% interval, the
paired difference from a baseline with its p-value, the base model's row, the sweep's power), as markdown,
CSV or JSON, with an optional plot and the paper's Table 5 beside it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from crlab.cli_options import DbOpt, JsonOpt, err, print_json
from crlab.errors import CrlabError

DEFAULT_METRIC = "eval/pass@1"
FORMATS = ("markdown", "csv", "json")


def ablation_command(
    sweep: Annotated[str, typer.Argument(help="The sweep's name or id.", show_default=False)],
    metric: Annotated[str, typer.Option(help="The metric to compare (any logged key).")] = DEFAULT_METRIC,
    by: Annotated[str, typer.Option(help="Config keys to group by, comma-separated; default: the sweep's grid keys.")] = "",
    at: Annotated[str, typer.Option(help="best: each run's best value (the best checkpoint); last: its final value.")] = "best",
    fmt: Annotated[str, typer.Option("--format", help="markdown | csv | json.")] = "markdown",
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Also draw bars with error bars and the metric's curves per run into this PNG.")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="Put the paper's Table 5 (Qwen3-4B, LCB v5) beside a data.crl_ratio ablation.")] = False,
    baseline: Annotated[str | None, typer.Option(help="KEY=VALUE: the row each other row is compared with (paired by seed and problem); default: the first value of the first swept key.", show_default=False)] = None,
    power: Annotated[float | None, typer.Option(help="A difference to detect (e.g. 0.024): also say how many seeds it needs at 80% power, alpha 0.05.", show_default=False)] = None,
    to_wandb: Annotated[bool, typer.Option("--wandb", help="Also log the table (and plot) to W&B, in the sweep's group.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Which value of the swept key is best, and is it better than noise: per swept value the mean over seeds
    of a metric (completed runs only), its 95% interval, the paired difference from the baseline with its
    interval and p-value (Holm-adjusted), the gain over the base model, and the smallest difference the sweep
    can detect; computed from the runs' per-problem evaluation records (see `crlab.stats`)."""
    from crlab import report
    from crlab.registry import Registry
    from crlab.registry.ablation import ablation
    from crlab.registry.ablation_stats import with_uncertainty

    if fmt not in FORMATS:
        raise CrlabError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if power is not None and not power > 0:
        raise CrlabError(f"--power {power}: the difference to detect must be positive, e.g. --power 0.024")
    keys = [k.strip() for k in by.split(",") if k.strip()]
    with Registry(db, create_if_empty=False) as reg:
        result = ablation(reg, sweep, metric, at, keys)
        if not result.rows:
            raise CrlabError(
                f"sweep {result.sweep}: no completed run has logged {metric!r} "
                f"(not counted: {result.left_out or 'none'}); pick another --metric"
            )
        result = with_uncertainty(reg, result, baseline, power)
        curves = _curves(reg, result) if plot_path is not None else {}
        runs = reg.list_runs(sweep_id=reg.get_sweep(sweep).id)
    if plot_path is not None:
        err.print(f"plot: {report.plot(result, curves, plot_path)}", highlight=False)
    if to_wandb:
        where = _log_wandb(result, runs, plot_path, paper)
        err.print(f"W&B: {where or 'tracking is disabled'}", highlight=False)
    if json_out or fmt == "json":
        data = result.to_json()
        if paper:
            for row, value in zip(data["rows"], report.paper_values(result), strict=True):
                row["paper"] = value
        print_json(data)
    elif fmt == "csv":
        sys.stdout.write(report.to_csv(result, paper))
    else:
        sys.stdout.write(report.markdown(result, paper))


def _curves(reg, result) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001
    runs = [run for row in result.rows for run in row.runs]
    return {run: [(m.step, m.value) for m in reg.metrics(run, [result.metric])] for run in runs}


def print_sweep_ablation(
    sweep_name: str, db: str | None, metric: str | None = None, select: str = "best"
) -> None:
    """What `platform sweep` prints last: its own ablation table with intervals and paired tests against the
    first value of the first swept key, on the held-out metric when the cells logged it, else on the
    training reward (saying so); nothing when no cell completed. When its runs track to W&B, the table
    and its plot go to the sweep's group too."""
    from crlab import report
    from crlab.registry import Registry
    from crlab.registry.ablation import ablation
    from crlab.registry.ablation_stats import with_uncertainty

    tried = [(metric or DEFAULT_METRIC, select if metric else "best"), ("reward/rl_mean", "last")]
    with Registry(db, create_if_empty=False) as reg:
        for name, at in tried:
            try:
                result = ablation(reg, sweep_name, name, at)
            except CrlabError:  # never logged by any run of the registry, or no grid key
                continue
            if result.rows:
                result = with_uncertainty(reg, result)
                break
        else:
            return
        tracked = _tracked_runs(reg, result)
        curves = _curves(reg, result) if tracked else {}
    if name != tried[0][0]:
        err.print(
            f"ablation: no completed cell logged {tried[0][0]}; showing {name} ({at}) instead",
            highlight=False,
        )
    sys.stdout.write("\n" + report.markdown(result))
    if tracked:
        folder = Path(tracked[0].run_dir).parent / f"ablation-{result.sweep}"
        try:
            where = _log_wandb(result, tracked, report.plot(result, curves, folder / "ablation.png"), False)
        except Exception as exc:  # noqa: BLE001 - a finished sweep never fails on its W&B copy of the table
            err.print(
                f"warning: the ablation was not logged to W&B ({type(exc).__name__}: {exc})", highlight=False
            )
            return
        if where is not None:
            err.print(f"W&B: the ablation (table with intervals, plot) is in {where}", highlight=False)


def _tracked_runs(reg, result) -> list:  # noqa: ANN001
    """The sweep's runs whose resolved config turns W&B tracking on and that have a folder (none: no W&B)."""
    runs = reg.list_runs(sweep_id=reg.get_sweep(result.sweep).id)
    return [r for r in runs if (r.config.get("tracking") or {}).get("enabled") and r.run_dir]


def _log_wandb(result, runs, plot_path: Path | None, paper: bool) -> Path | None:  # noqa: ANN001
    """The ablation as a W&B run in the sweep's group, with the project and mode of the sweep's runs."""
    from crlab import report
    from crlab.tracking import log_ablation

    tracking = (runs[0].config.get("tracking") or {}) if runs else {}
    header, rows = report.table_rows(result, paper)
    folder = (
        Path(runs[0].run_dir).parent / f"ablation-{result.sweep}"
        if runs
        else Path(f"ablation-{result.sweep}")
    )
    return log_ablation(
        project=tracking.get("project", "crlab"), entity=tracking.get("entity"),
        mode=tracking.get("mode", "offline") if tracking.get("enabled", True) else "disabled",
        group=result.sweep, run_id=f"ablation-{runs[0].sweep_id if runs else result.sweep}", folder=folder,
        columns=header, rows=rows, plot=plot_path,
        notes=[*result.notes, *filter(None, [report.power_line(result.power)])],
    )  # fmt: skip


def sync_command(
    sweep: Annotated[str, typer.Argument(help="The sweep's name or id.", show_default=False)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the offline runs only.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload every offline W&B run of a sweep (its cells, and its ablation run) with `wandb sync`."""
    import subprocess

    from crlab.registry import Registry
    from crlab.tracking import offline_runs

    with Registry(db, create_if_empty=False) as reg:
        found = reg.get_sweep(sweep)
        dirs = [r.run_dir for r in reg.list_runs(sweep_id=found.id) if r.run_dir]
    if dirs:
        dirs.append(str(Path(dirs[0]).parent / f"ablation-{found.name}"))
    folders = offline_runs(dirs)
    if dry_run or not folders:
        if json_out:
            print_json({"sweep": found.name, "offline_runs": [str(f) for f in folders]})
        else:
            for folder in folders:
                sys.stdout.write(f"{folder}\n")
            err.print(f"{len(folders)} offline W&B run(s) of sweep {found.name}", highlight=False)
        return
    cmd = [sys.executable, "-m", "wandb", "sync", *map(str, folders)]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        why = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("Error")]
        raise CrlabError(
            f"wandb sync failed: {(why or ['exit code ' + str(done.returncode)])[-1]}; the offline runs stay "
            f"where they are (`platform sync {found.name} --dry-run` lists them): fix it and rerun"
        )
    if json_out:
        print_json({"sweep": found.name, "uploaded": [str(f) for f in folders]})
    else:
        err.print(f"uploaded {len(folders)} offline W&B run(s) of sweep {found.name}", highlight=False)

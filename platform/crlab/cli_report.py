"""`platform ablation`: a sweep's ablation table (mean ± std over seeds per swept value), as markdown, CSV
or JSON, with an optional plot and the paper's Table 5 beside it."""

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
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Which value of the swept key is best: mean, std and n over seeds of a metric, per swept value, computed
    in the database from the runs' summaries (completed runs only)."""
    from crlab import report
    from crlab.registry import Registry
    from crlab.registry.ablation import ablation

    if fmt not in FORMATS:
        raise CrlabError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    keys = [k.strip() for k in by.split(",") if k.strip()]
    with Registry(db, create_if_empty=False) as reg:
        result = ablation(reg, sweep, metric, at, keys)
        curves = _curves(reg, result) if plot_path is not None else {}
    if not result.rows:
        raise CrlabError(
            f"sweep {result.sweep}: no completed run has logged {metric!r} "
            f"(not counted: {result.left_out or 'none'}); pick another --metric"
        )
    if plot_path is not None:
        err.print(f"plot: {report.plot(result, curves, plot_path)}", highlight=False)
    if json_out or fmt == "json":
        print_json(result.to_json())
    elif fmt == "csv":
        sys.stdout.write(report.to_csv(result, paper))
    else:
        sys.stdout.write(report.markdown(result, paper))


def _curves(reg, result) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001
    runs = [run for row in result.rows for run in row.runs]
    return {run: [(m.step, m.value) for m in reg.metrics(run, [result.metric])] for run in runs}


def print_sweep_ablation(sweep_name: str, db: str | None, metric: str | None = None) -> None:
    """What `platform sweep` prints last: its own ablation table, on the held-out metric when the cells
    logged it, else on the training reward (saying so); nothing when no cell completed."""
    from crlab import report
    from crlab.registry import Registry
    from crlab.registry.ablation import ablation

    tried = [(metric or DEFAULT_METRIC, "best"), ("reward/rl_mean", "last")]
    with Registry(db, create_if_empty=False) as reg:
        for name, at in tried:
            try:
                result = ablation(reg, sweep_name, name, at)
            except CrlabError:  # never logged by any run of the registry, or no grid key
                continue
            if result.rows:
                break
        else:
            return
    if name != tried[0][0]:
        err.print(
            f"ablation: no completed cell logged {tried[0][0]}; showing {name} ({at}) instead",
            highlight=False,
        )
    sys.stdout.write("\n" + report.markdown(result))

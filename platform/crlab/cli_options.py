"""What every `platform` command shares: its consoles, the --db and --json options, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Registry URL. Default: $CRLAB_DB_URL, else sqlite:///$CRLAB_HOME/registry.db."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Config overrides as key=value, e.g. grpo.lr=2e-6 data.crl_ratio=0.5."),
]

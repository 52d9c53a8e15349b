"""What every `platform` command shares: its consoles, the --db and --json options, JSON output."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console


def _console(stderr: bool = False) -> Console:
    """Off a terminal (a pipe, a file) and without $COLUMNS, tables get 160 columns rather than rich's 80,
    so that `platform runs list | less` and a log file keep whole cells."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 160)
    return console


out = _console()
err = _console(stderr=True)


def _flag_type_hidden() -> None:
    """Help lists a flag without a type: typer (0.29 and later) shows ``<bool>`` beside every flag, which
    says nothing a flag's name does not."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "_crlab", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._crlab = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flag_type_hidden()

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

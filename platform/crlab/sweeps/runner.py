"""Run a sweep's cells exactly once, on this machine.

The sweep is found (or created) in the registry by name. Each cell is claimed in the registry (see
:mod:`crlab.registry.claims`) and, when this process wins it, trained in a subprocess
(``python -m crlab resume RUN_ID``: a fresh cell starts from scratch, an interrupted one continues from its
newest checkpoint). Up to ``executor.parallel`` cells run at once. Rerunning the same command skips
completed cells, resumes preempted, failed or stale ones and starts the rest; a failed cell is retried
until it has used ``executor.max_retries`` retries, then left failed with its error.

SIGTERM or SIGINT to the sweep is passed on to the running cells, which checkpoint and stop as
``preempted``; rerunning the command resumes them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from crlab import config as cfgmod
from crlab.errors import CrlabError
from crlab.registry import Registry, resolve_db_url
from crlab.registry.claims import Claim, claim_cell
from crlab.sweeps.executors import CellHandle, make_executor
from crlab.sweeps.spec import Cell, SweepSpec
from crlab.train.loop import new_run_fields, write_run_dir

POLL_S = 2.0
CLAIM_STATES = {
    "start": "started", "resume": "resumed", "completed": "already completed",
    "running": "running elsewhere", "gave_up": "failed (no retries left)",
}  # fmt: skip


def ensure_sweep(registry: Registry, spec: SweepSpec) -> str:
    """The sweep is identified by its name: rerunning a spec continues the same sweep."""
    try:
        return registry.get_sweep(spec.name).id
    except CrlabError:
        return registry.get_or_create_sweep(
            spec.name, spec.to_json(), str(spec.path) if spec.path else None
        ).id


class _Cells:
    """The sweep's cells with their state in this invocation, for the live view and the summary."""

    def __init__(self, cells: list[Cell]) -> None:
        self.cells = cells
        self.state: dict[str, str] = {c.key: "waiting" for c in cells}
        self.run_ids: dict[str, str] = {}

    def table(self, registry: Registry) -> Table:
        table = Table(title_justify="left")
        for column in ("cell", "run", "status", "step", "reward/rl_mean", "critique/accuracy"):
            table.add_column(column)
        for cell in self.cells:
            run_id = self.run_ids.get(cell.key, "-")
            latest = registry.latest_metrics(run_id) if run_id != "-" else {}
            step = max((s for s, _ in latest.values()), default=None)
            values = [latest.get(k) for k in ("reward/rl_mean", "critique/accuracy")]
            table.add_row(
                cell.label, run_id, self.state[cell.key], "-" if step is None else str(step),
                *("-" if v is None else f"{v[1]:.3f}" for v in values),
            )  # fmt: skip
        return table


def _claim(registry: Registry, sweep_id: str, cell: Cell, executor: dict[str, Any]) -> Claim:
    cfg = cfgmod.from_dict(cell.config)
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    claim = claim_cell(
        registry, sweep_id, cell.key, new_run_fields(cfg), grace_s=float(executor["heartbeat_grace_s"]),
        max_retries=int(executor["max_retries"]), owner=owner,
    )  # fmt: skip
    if claim.action == "start":
        write_run_dir(claim.run.run_dir or "", cfg)
    return claim


def run_sweep(spec: SweepSpec, cells: list[Cell], db_url: str | None = None, json_out: bool = False) -> int:
    """Run every cell not yet completed; print a live view and a summary table (or JSON).

    Returns the number of cells that ended failed in this invocation (the CLI exits 1 when there are any).
    """
    executor = make_executor(spec.executor)  # an unusable executor fails before anything is registered
    url = resolve_db_url(db_url)
    registry = Registry(url)
    sweep_id = ensure_sweep(registry, spec)
    view = _Cells(cells)
    console = Console(stderr=json_out)
    if not console.is_terminal:
        console.width = max(console.width, 140)
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Live(view.table(registry), console=console, refresh_per_second=1, transient=True) as live:
            _schedule(registry, url, sweep_id, spec, executor, view, live, stopping)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if stopping and executor.detaches:
        console.print("stopped watching; the Slurm jobs go on: rerun the same command to watch them again")
    _summary(registry, sweep_id, view, console, json_out)
    return sum(state.startswith("failed") for state in view.state.values())


def _start(
    registry: Registry, url: str, sweep_id: str, spec: SweepSpec, executor: Any, view: _Cells, cell: Cell
) -> CellHandle | None:
    """Claim ``cell`` and launch it (or watch its live Slurm job); None when another process has it."""
    claim = _claim(registry, sweep_id, cell, spec.executor)
    view.run_ids[cell.key] = claim.run.id
    view.state[cell.key] = CLAIM_STATES[claim.action]
    if claim.action in ("running", "resume"):
        handle = executor.adopt(claim.run)
        if handle is not None:
            view.state[cell.key] = "watching its job"
            return handle
    return executor.launch(claim.run, url) if claim.mine else None


def _schedule(
    registry: Registry,
    url: str,
    sweep_id: str,
    spec: SweepSpec,
    executor: Any,
    view: _Cells,
    live: Live,
    stopping: list[int],
) -> None:
    queue = list(view.cells)
    running: dict[str, tuple[Cell, CellHandle]] = {}
    while queue or running:
        while queue and len(running) < executor.parallel and not stopping:
            cell = queue.pop(0)
            handle = _start(registry, url, sweep_id, spec, executor, view, cell)
            if handle is not None:
                running[view.run_ids[cell.key]] = (cell, handle)
        if stopping:
            if executor.detaches:
                break
            for _, handle in running.values():
                handle.stop()
        time.sleep(POLL_S)
        for run_id, (cell, handle) in list(running.items()):
            code = handle.poll()
            if code is None:
                continue
            del running[run_id]
            run = registry.get_run(run_id)
            if run.status == "running":  # died before it could say how it ended
                run = registry.finish_run(run_id, "failed", error=f"exited with code {code}")
            view.state[cell.key] = run.status
            if run.status == "failed" and run.attempt <= int(spec.executor["max_retries"]) and not stopping:
                queue.append(cell)
        live.update(view.table(registry))
        if stopping and not running:
            break


def _summary(registry: Registry, sweep_id: str, view: _Cells, console: Console, json_out: bool) -> None:
    import json

    runs = {r.cell_key: r for r in registry.list_runs(sweep_id=sweep_id)}
    rows = []
    for cell in view.cells:
        run = runs.get(cell.key)
        latest = registry.latest_metrics(run.id) if run else {}
        rows.append({
            "cell": cell.label, "key": cell.key, "run": run.id if run else None,
            "status": run.status if run else "not started", "this_invocation": view.state[cell.key],
            "error": run.error if run else None,
            "latest_metrics": {k: v for k, (_, v) in latest.items() if k.startswith(("reward/", "critique/"))},
        })  # fmt: skip
    if json_out:
        sys.stdout.write(json.dumps({"sweep_id": sweep_id, "cells": rows}, indent=2) + "\n")
        return
    if all(r["this_invocation"] == "already completed" for r in rows):
        console.print(f"all {len(rows)} cells of this sweep are already completed: nothing to do")
    console.print(view.table(registry))

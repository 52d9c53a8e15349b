"""Run a grid sweep's cells exactly once.

The sweep is found (or created) in the registry by name. Each cell is claimed in the registry (see
:mod:`crlab.registry.claims`) and, when this process wins it, run by the executor
(``python -m crlab resume RUN_ID --claimed``: a fresh cell starts from scratch, an interrupted one continues
from its newest checkpoint). The loop is :func:`crlab.sweeps.scheduler.schedule`, shared with search
sweeps; progress is :class:`crlab.sweeps.progress.SweepProgress`. Rerunning the same command skips
completed cells, resumes preempted, failed or stale ones and starts the rest; a failed cell gets at most
``executor.max_retries + 1`` attempts, whatever the failure, then is left failed with its error (and the
summary says how to go on: ``--retry-failed`` grants every failed cell a fresh ``max_retries + 1``
attempts, each resuming from its newest checkpoint; or ``platform resume RUN``).

A sweep answers for every cell of its spec: a cell still training from a sweep process that died is
adopted (followed and settled here, counted in the table; :mod:`crlab.sweeps.watch`), and a cell that
another live sweep runs is waited for, unless ``wait`` is off (``--no-wait``). :func:`run_sweep` returns
the exit code a script can rely on: 0 every cell completed, 1 a cell failed, 3 returned before the end.

SIGTERM or SIGINT to the sweep is passed on to the cells it launched, which checkpoint and stop as
``preempted``; rerunning the command resumes them.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crlab import config as cfgmod
from crlab.errors import CrlabError, RegistryUnreachable
from crlab.registry import Registry, resolve_db_url
from crlab.registry.claims import ClaimAction, claim_cell
from crlab.registry.entities import RunStatus
from crlab.registry.lifecycle import new_run_fields, owner, write_run_dir
from crlab.sweeps.executor_factory import make_executor
from crlab.sweeps.executors import Executor
from crlab.sweeps.progress import EVERY, SweepProgress
from crlab.sweeps.scheduler import Active, Watch, schedule
from crlab.sweeps.spec import Cell, SweepSpec
from crlab.sweeps.watch import Watched


class CellState(StrEnum):
    """Where a cell stands in this invocation, before its run ends (then: the run's :class:`RunStatus`).
    The values are what the table and ``this_invocation`` in the JSON summary show."""

    QUEUED = "waiting"
    STARTED = "started"
    RESUMED = "resumed"
    ALREADY_COMPLETED = "already completed"
    ADOPTED = "adopted"
    RUNNING_ELSEWHERE = "running elsewhere"
    GAVE_UP = "failed (no retries left)"
    WAITING = "waiting for another sweep"
    WATCHING_JOB = "watching its job"


CellResult = CellState | RunStatus  # a cell's state in this invocation, or how its run ended
CLAIM_STATES = {
    ClaimAction.START: CellState.STARTED, ClaimAction.RESUME: CellState.RESUMED,
    ClaimAction.COMPLETED: CellState.ALREADY_COMPLETED, ClaimAction.ADOPT: CellState.ADOPTED,
    ClaimAction.RUNNING: CellState.RUNNING_ELSEWHERE, ClaimAction.GAVE_UP: CellState.GAVE_UP,
}  # fmt: skip
WAITING = CellState.WAITING
LIVE_STATES = {
    CellState.STARTED, CellState.RESUMED, CellState.ADOPTED, CellState.RUNNING_ELSEWHERE, CellState.WAITING,
    CellState.WATCHING_JOB,
}  # fmt: skip


TABLE_COLUMNS = ("cell", "run", "status", "attempt", "step", "reward/rl_mean", "critique/accuracy")


def ensure_sweep(registry: Registry, spec: SweepSpec) -> str:
    """The sweep is identified by its name: rerunning a spec continues the same sweep."""
    try:
        return registry.get_sweep(spec.name).id
    except CrlabError:
        return registry.get_or_create_sweep(
            spec.name, spec.to_json(), str(spec.path) if spec.path else None
        ).id


def sweep_console(json_out: bool) -> Console:
    """Progress goes to stderr when stdout carries JSON; off a terminal, lines are not cut at 80 columns."""
    console = Console(stderr=json_out)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT are collected (the scheduler stops the cells cleanly) while the block runs."""
    stopping: list[int] = []
    old = {
        sig: signal.signal(sig, lambda s, _f: stopping.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stopping
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class GridCells:
    """A grid sweep's cells as a :class:`~crlab.sweeps.scheduler.CellSource`, with their state in this
    invocation for the live view and the summary. ``wait``: follow cells that another live sweep runs to
    their end; ``retry_failed``: a failed cell gets ``max_retries + 1`` attempts more than it has had."""

    def __init__(self, registry: Registry, url: str, sweep_id: str, spec: SweepSpec, cells: list[Cell],
                 executor: Executor, wait: bool = True, retry_failed: bool = False) -> None:  # fmt: skip
        self.registry, self.url, self.sweep_id, self.spec, self.executor = (
            registry,
            url,
            sweep_id,
            spec,
            executor,
        )
        self.cells, self.wait = cells, wait
        self.queue = list(cells)
        self.state: dict[str, CellResult] = {c.key: CellState.QUEUED for c in cells}
        self.run_ids: dict[str, str] = {}
        self.had: dict[str, int] = {}  # --retry-failed: attempts a failed cell had before this invocation
        if retry_failed:
            runs = registry.list_runs(sweep_id=sweep_id, status=RunStatus.FAILED)
            self.had = {r.cell_key: r.attempt for r in runs if r.cell_key}

    def max_retries(self, cell: Cell) -> int:
        return self.spec.executor.max_retries + self.had.get(cell.key, 0)

    def next_cell(self) -> Active | None:
        while self.queue:
            item = self._start(self.queue.pop(0))
            if item is not None:
                return item
        return None

    def _start(self, cell: Cell) -> Active | None:
        """Claim ``cell`` and launch it, adopt it, or follow it; None when this process does neither."""
        cfg = cfgmod.from_dict(cell.config)
        grace_s = float(self.spec.executor.heartbeat_grace_s)
        claim = claim_cell(
            self.registry, self.sweep_id, cell.key, {**new_run_fields(cfg), "name": cell.run_name},
            grace_s=grace_s, max_retries=self.max_retries(cell), owner=owner(),
        )  # fmt: skip
        if claim.action == ClaimAction.START:
            write_run_dir(claim.run.run_dir or "", cfg)
        run = claim.run
        self.run_ids[cell.key] = run.id
        self.state[cell.key] = CLAIM_STATES[claim.action]
        if claim.action in (ClaimAction.RUNNING, ClaimAction.RESUME, ClaimAction.ADOPT):
            handle = self.executor.adopt(run)  # a Slurm job still queued or running
            if handle is not None:
                self.state[cell.key] = CellState.WATCHING_JOB
                return Active(cell.label, run.id, handle, payload=cell)
        if claim.mine:
            return Active(cell.label, run.id, self.executor.launch(run, self.url), payload=cell)
        if claim.action == ClaimAction.ADOPT:
            return Active(cell.label, run.id, Watched(self.registry, run, grace_s, True), cell, Watch.ADOPTED)
        if claim.action == ClaimAction.RUNNING and self.wait:
            self.state[cell.key] = WAITING
            return Active(cell.label, run.id, Watched(self.registry, run, grace_s, False), cell, Watch.WAITING)
        return None

    def on_poll(self, item: Active) -> None:
        return None

    def on_finish(self, item: Active, run: Any, stopping: bool) -> None:
        cell = item.payload
        self.state[cell.key] = RunStatus(run.status)
        if stopping:
            return
        if run.status == RunStatus.FAILED and run.attempt <= self.max_retries(cell):
            self.queue.append(cell)  # another attempt, after the cells that have not run yet
        elif run.status == RunStatus.PREEMPTED and item.watch is not None:
            self.queue.append(cell)  # stopped with the sweep that ran it: this one answers for it now

    def judged(self, run_id: str | None) -> float | None:
        """The run's value of the spec's ``metric`` (its best or its last, as ``select`` says)."""
        metric = self.spec.metric
        return self.registry.metric_value(run_id, metric, self.spec.select) if metric and run_id else None

    def table(self) -> Table:
        table = Table(title_justify="left")
        judged = [f"{self.spec.metric} ({self.spec.select})"] if self.spec.metric else []
        for column in (*TABLE_COLUMNS, *judged):
            table.add_column(column)
        for cell in self.cells:
            run_id = self.run_ids.get(cell.key)
            run = self.registry.get_run(run_id) if run_id else None
            latest = self.registry.latest_metrics(run_id) if run_id else {}
            step = max((s for s, _ in latest.values()), default=None)
            values = [v[1] if (v := latest.get(k)) else None for k in ("reward/rl_mean", "critique/accuracy")]
            values += [self.judged(run_id)] if judged else []
            table.add_row(
                cell.label, run_id or "-", self.state[cell.key], str(run.attempt) if run else "-",
                "-" if step is None else str(step), *("-" if v is None else f"{v:.3f}" for v in values),
            )  # fmt: skip
        return table


def run_sweep(
    spec: SweepSpec, cells: list[Cell], db_url: str | None = None, json_out: bool = False, every: int = EVERY,
    wait: bool = True, retry_failed: bool = False,
) -> int:  # fmt: skip
    """Run every cell not yet completed; report progress and print a summary table (or JSON).

    Returns the exit code: 0 when every cell completed, 1 when a cell is failed, 3 when
    a cell had not ended when this returned (``--no-wait``, or the sweep was stopped). Raises
    :class:`~crlab.sweeps.scheduler.EnvironmentFailure` when two cells fail alike before step 1, and
    :class:`~crlab.errors.RegistryUnreachable` (exit code 3, naming the cells that carry on) when the
    registry stayed unreachable.
    """
    executor = make_executor(spec.executor)  # an unusable executor fails before anything is registered
    url = resolve_db_url(db_url)
    registry = Registry(url)
    sweep_id = ensure_sweep(registry, spec)
    grid = GridCells(registry, url, sweep_id, spec, cells, executor, wait, retry_failed)
    console = sweep_console(json_out)
    progress = SweepProgress(console, registry, grid.table, every)
    progress.watch(registry, float(spec.executor.registry_retry_s))
    with stop_signals() as stopping, progress:
        try:
            schedule(registry, grid, executor, progress, stopping)
        except RegistryUnreachable as exc:
            live = [cell.label for cell in cells if grid.state[cell.key] in LIVE_STATES]
            raise RegistryUnreachable(f"{exc.message}; still running: {', '.join(live) or 'none'}") from None
        finally:
            if stopping and executor.detaches:
                progress.line(
                    "stopped watching; the Slurm jobs go on: rerun the same command to watch them again"
                )
            if registry.reach.down_since is None:  # no summary from a registry that gave out
                _summary(grid, console, json_out)
    return _exit_code(grid)


def _exit_code(grid: GridCells) -> int:
    """1 if a cell is failed, else 3 if one has not ended (named on stderr), else 0."""
    runs = {r.cell_key: r for r in grid.registry.list_runs(sweep_id=grid.sweep_id)}
    status = {c.label: runs[c.key].status if c.key in runs else None for c in grid.cells}
    if any(s == RunStatus.FAILED for s in status.values()):
        return 1
    unfinished = [f"{label} ({s or 'not started'})" for label, s in status.items() if s != RunStatus.COMPLETED]
    if unfinished:
        Console(stderr=True).print(
            escape(
                f"returned before the end: {len(unfinished)} cell(s) not completed: {', '.join(unfinished)}; "
                "rerun the same command to follow them to the end"
            ),
            highlight=False,
            soft_wrap=True,
        )
        return 3
    return 0


def _summary(grid: GridCells, console: Console, json_out: bool) -> None:
    registry = grid.registry
    runs = {r.cell_key: r for r in registry.list_runs(sweep_id=grid.sweep_id)}
    rows = []
    for cell in grid.cells:
        run = runs.get(cell.key)
        latest = registry.latest_metrics(run.id) if run else {}
        rows.append({
            "cell": cell.label, "key": cell.key, "run": run.id if run else None,
            "status": str(run.status) if run else "not started", "attempts": run.attempt if run else 0,
            "this_invocation": grid.state[cell.key], "error": run.error if run else None,
            "run_dir": run.run_dir if run else None,
            "latest_metrics": {k: v for k, (_, v) in latest.items() if k.startswith(("reward/", "critique/", "eval/"))},
        })  # fmt: skip
        if grid.spec.metric:
            rows[-1]["judged"] = {
                "metric": grid.spec.metric,
                "select": grid.spec.select,
                "value": grid.judged(run and run.id),
            }
    if json_out:
        sys.stdout.write(json.dumps({"sweep_id": grid.sweep_id, "cells": rows}, indent=2) + "\n")
        return
    if all(r["this_invocation"] == CellState.ALREADY_COMPLETED for r in rows):
        console.print(f"all {len(rows)} cells of this sweep are already completed: nothing to do")
    console.print(grid.table())
    for r in rows:
        if r["status"] == RunStatus.FAILED and r["error"]:
            text = (
                f"[{r['cell']}] after {r['attempts']} attempt(s): {r['error']} (log: {r['run_dir']}/train.log); "
                f"to retry it: rerun this sweep with --retry-failed (max_retries + 1 more attempts, each from its "
                f"newest checkpoint), or `platform resume {r['run']}`"
            )
            console.print(f"[red]failed[/] {escape(text)}", highlight=False, soft_wrap=True)

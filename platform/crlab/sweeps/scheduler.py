"""The one scheduler loop of every sweep, grid or search.

A :class:`CellSource` says which cell to run next (a grid: its queue of cells; a search: an interrupted
trial, else a new one from the study) and what to do when one ends (a grid: queue a failed cell again while
it has attempts left; a search: tell the study). The loop claims nothing itself: it keeps up to
``executor.parallel`` cells running, polls them, settles the run of a cell whose process ended without
saying how (:func:`~crlab.registry.lifecycle.settle`), and reports progress.

A source may also hand it cells it did not launch (:mod:`crlab.sweeps.watch`): one *adopted* from a sweep
that died fills a slot of ``executor.parallel`` as its own would; one *waited for* while another live sweep
runs it fills none. Stopping the sweep leaves both training (they are no process of this one).

When the first attempts of two cells fail with the same error before their first step, the cause is the
environment (a missing tool, a model that cannot load), not bad luck: the loop stops the other cells and
raises :class:`EnvironmentFailure` with that one line, instead of spending every cell's retries. A cell that
fails for a full disk (:class:`~crlab.errors.DiskFull`) stops the sweep the same way at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from crlab.errors import CrlabError, DiskFull
from crlab.registry import Registry
from crlab.registry.entities import Run, RunStatus
from crlab.registry.lifecycle import settle
from crlab.sweeps.executors import CellHandle, Executor

POLL_S = 2.0


class EnvironmentFailure(CrlabError):
    """Two cells failed alike before their first step: the sweep stops (exit code 2)."""


class Watch(StrEnum):
    """Why this process follows a cell it did not launch."""

    ADOPTED = "adopted"  # its sweep died
    WAITING = "waiting"  # another live sweep runs it


@dataclass
class Active:
    """A cell this process is running: its label, its run and the handle of its process or job."""

    label: str
    run_id: str
    handle: CellHandle
    payload: Any = None  # the source's own (a search: its trial and what it has reported)
    watch: Watch | None = None  # None: launched here


class CellSource(Protocol):
    def next_cell(self) -> Active | None:
        """Claim and launch the next cell this process should run; None when there is none now."""

    def on_poll(self, item: Active) -> None:
        """Called at every poll of a running cell (a search reports its metric and may prune it)."""

    def on_finish(self, item: Active, run: Run, stopping: bool) -> None:
        """Called once the cell's process has ended and its run is settled."""


class Reporter(Protocol):
    def started(self, item: Active) -> None: ...
    def polled(self, item: Active) -> None: ...
    def finished(self, item: Active, run: Run) -> None: ...
    def refresh(self) -> None: ...


def schedule(
    registry: Registry, source: CellSource, executor: Executor, report: Reporter, stopping: list[int]
) -> None:
    """Run the source's cells to the end (or until ``stopping`` holds a signal)."""
    active: dict[str, Active] = {}
    first_failures: dict[str, str] = {}  # error -> label of the first cell that failed with it early
    while True:
        while not stopping and sum(a.watch != Watch.WAITING for a in active.values()) < executor.parallel:
            item = source.next_cell()
            if item is None:
                break
            active[item.run_id] = item
            report.started(item)
        if stopping:  # cells this process did not launch train on
            active = {k: a for k, a in active.items() if a.watch is None}
        if not active or (stopping and executor.detaches):
            return
        if stopping:
            for item in active.values():
                item.handle.stop()
        time.sleep(POLL_S)
        for item in list(active.values()):
            source.on_poll(item)
            report.polled(item)
            run = _ended(registry, item)
            if run is None:
                continue
            del active[item.run_id]
            source.on_finish(item, run, bool(stopping))
            run = registry.get_run(item.run_id)  # as the source left it (a search: a pruned trial is pruned)
            report.finished(item, run)
            failure = _environment_failure(registry, item, run, first_failures)
            if failure is not None:
                _stop_all(registry, active, report, wait=not executor.detaches)
                raise EnvironmentFailure(failure)
        report.refresh()


def _ended(registry: Registry, item: Active) -> Run | None:
    code = item.handle.poll()
    if code is None:
        return None
    run = registry.get_run(item.run_id)
    log = Path(run.run_dir) / "train.log" if run.run_dir else None
    return settle(registry, item.run_id, code, log=str(log) if log and log.exists() else None)


def _environment_failure(
    registry: Registry, item: Active, run: Run, first_failures: dict[str, str]
) -> str | None:
    """The one line that stops the sweep: a full disk (every retry would fail at the same save), or the second
    cell to fail alike before step 1."""
    if run.status == RunStatus.FAILED and (run.error or "").startswith(f"{DiskFull.__name__}:"):
        return f"[{item.label}] {run.error}; the sweep stops (a retry would fail the same way): free space, then rerun the same command"
    if run.status != RunStatus.FAILED or run.attempt != 1 or not run.error or registry.metric_count(run.id):
        return None
    error = run.error.replace(run.id, "<run>")
    if run.run_dir:
        error = error.replace(run.run_dir, "<run dir>")
    first = first_failures.setdefault(error, item.label)
    if first == item.label:
        return None
    return (
        f"cells [{first}] and [{item.label}] both failed before their first step with: {run.error} "
        "(this is the environment, not bad luck: fix it, then rerun the same command)"
    )


def _stop_all(registry: Registry, active: dict[str, Active], report: Reporter, wait: bool) -> None:
    """Ask every running cell to checkpoint and stop, and wait until they have (Slurm jobs go on, and so
    do cells this process did not launch)."""
    active = {k: a for k, a in active.items() if a.watch is None}
    for item in active.values():
        item.handle.stop()
    while wait and active:
        time.sleep(POLL_S / 4)
        for item in list(active.values()):
            run = _ended(registry, item)
            if run is not None:
                del active[item.run_id]
                report.finished(item, run)

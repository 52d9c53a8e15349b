"""Exactly-once sweep cells: claiming a cell is one transaction on the (sweep, cell key) row.

A claim takes the cell's run for this process: status ``running``, a fresh heartbeat, and a new attempt,
counted at once (see :mod:`crlab.registry.lifecycle`). Another sweep process that finds the run alive
(the one liveness rule, :func:`~crlab.registry.lifecycle.is_alive`) leaves it alone; a dead one is taken
over. Completed and pruned cells are skipped; a failed one is taken again until it has had
``max_retries + 1`` attempts, whatever the failure. Two processes inserting the same new cell race on the
unique (sweep_id, cell_key) constraint: one wins, the other sees the winner's row.

**Who watches a cell.** Every claim that starts or resumes a cell records the claiming sweep process as the
run's watcher (a ``sweep_watch`` event: host, pid). A live run whose watcher is gone (its sweep was killed:
the cell, not the sweep's child in any way that kills it, trains on) is **adopted** by the next claimer,
which records itself as the watcher in the same transaction: it follows the run and settles it as if it had
started it. Adopting counts no attempt: the run's process and its attempt go on (the attempt's own records,
its ending included, are only applied to the attempt that wrote them, :mod:`crlab.registry.journal`). A
watcher on another host cannot be checked from here and counts as alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crlab.registry import db
from crlab.registry.entities import EventKind, Run, RunStatus
from crlab.registry.lifecycle import is_alive, process_state
from crlab.registry.models import EventRow, RunRow
from crlab.registry.store import Registry, _run, begin_attempt, utcnow

WATCH_EVENT = EventKind.SWEEP_WATCH.value  # the sweep process (host, pid) that claimed or adopted a run last


class ClaimAction(StrEnum):
    """The outcome of a claim: what this process does with the cell."""

    START = "start"  # this process runs it, a first attempt
    RESUME = "resume"  # this process runs it again
    ADOPT = "adopt"  # it follows a live run whose sweep is gone
    COMPLETED = "completed"  # nothing to do: the run is final
    RUNNING = "running"  # another live sweep watches it
    GAVE_UP = "gave_up"  # failed with no retry left

    @property
    def runs_here(self) -> bool:
        """Whether this process starts the cell's run."""
        return self in (ClaimAction.START, ClaimAction.RESUME)


@dataclass(frozen=True)
class Claim:
    action: ClaimAction
    run: Run

    @property
    def mine(self) -> bool:
        return self.action.runs_here


def _decide(row: RunRow, grace_s: float, max_retries: int, watched_s: float) -> ClaimAction:
    status = RunStatus(row.status)
    if status.final:
        return ClaimAction.COMPLETED
    if is_alive(status, row.host, row.pid, row.heartbeat_at, grace_s, watched_s):
        return ClaimAction.RUNNING
    if status == RunStatus.FAILED and row.attempt > max_retries:
        return ClaimAction.GAVE_UP
    return ClaimAction.RESUME if row.attempt > 0 else ClaimAction.START


def claim_cell(
    registry: Registry, sweep_id: str, cell_key: str, new_run: dict[str, Any], *,
    grace_s: float, max_retries: int, owner: dict[str, Any] | None = None,
) -> Claim:  # fmt: skip
    """Claim the cell for this process, or say why not. ``new_run`` holds the fields of a first row. While
    the registry is unreachable the claim is retried (``registry.reach``)."""
    for _ in range(2):  # a lost insert race is retried once, then the winner's row decides
        try:
            return registry.reach.call(
                _claim_once, registry, sweep_id, cell_key, new_run, grace_s, max_retries, owner or {}
            )
        except IntegrityError:
            continue
    return registry.reach.call(
        _claim_once, registry, sweep_id, cell_key, new_run, grace_s, max_retries, owner or {}
    )


def _claim_once(
    registry: Registry, sweep_id: str, cell_key: str, new_run: dict[str, Any],
    grace_s: float, max_retries: int, owner: dict[str, Any],
) -> Claim:  # fmt: skip
    with db.session_scope(registry.engine) as s:
        query = (
            select(RunRow).where(RunRow.sweep_id == sweep_id, RunRow.cell_key == cell_key).with_for_update()
        )
        row = s.scalars(query).first()
        if row is None:
            row = RunRow(
                sweep_id=sweep_id, cell_key=cell_key, status=RunStatus.PENDING.value, attempt=0,
                created_at=utcnow(), **{"packages": {}, **new_run},
            )  # fmt: skip
            s.add(row)
            action = ClaimAction.START
        else:
            action = _decide(row, grace_s, max_retries, registry.reach.healthy_for())
            if action == ClaimAction.RUNNING and not _watched(s, row.id):
                action = ClaimAction.ADOPT
        if action.runs_here:
            begin_attempt(row, owner)
        s.flush()
        if (action.runs_here or action == ClaimAction.ADOPT) and owner:
            s.add(EventRow(run_id=row.id, step=None, kind=WATCH_EVENT, payload=dict(owner), time=utcnow()))
        return Claim(action, _run(row))


def _watched(s: Any, run_id: str) -> bool:
    """Whether the sweep process that last claimed or adopted the run still lives (another host's: assumed)."""
    query = (
        select(EventRow)
        .where(EventRow.run_id == run_id, EventRow.kind == WATCH_EVENT)
        .order_by(EventRow.id.desc())
        .limit(1)
    )
    event = s.scalars(query).first()
    return watcher_alive(event.payload if event is not None else None)


def watcher_alive(payload: dict[str, Any] | None, elsewhere: bool = True) -> bool:
    """Whether the sweep process of a ``sweep_watch`` payload lives; ``elsewhere``: the answer for one on
    another host, which cannot be checked. None (a run taken by hand with `platform resume`, or by a sweep
    from before watchers were recorded): nobody watches it."""
    if payload is None:
        return False
    state = process_state(payload.get("host"), payload.get("pid"))
    return elsewhere if state is None else state

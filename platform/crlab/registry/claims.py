"""Exactly-once sweep cells: claiming a cell is one transaction on the (sweep, cell key) row.

A cell is claimed by setting its run row to ``running`` with a fresh heartbeat. Another sweep process
that finds the row running with a heartbeat younger than the grace period leaves it alone; a row whose
heartbeat is older is stale (its process died) and is reclaimed, and so is a row whose process ran on this
host and no longer exists (a crash on this machine is taken over at once, without waiting out the grace). Completed cells are skipped; failed ones
are retried until their attempts exceed ``max_retries``. Two processes inserting the same new cell race
on the unique (sweep_id, cell_key) constraint: one wins, the other sees the winner's row.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crlab.registry import db
from crlab.registry.entities import Run
from crlab.registry.models import RunRow
from crlab.registry.store import Registry, _run, utcnow


@dataclass(frozen=True)
class Claim:
    action: str  # start | resume (this process runs it) | completed | running | gave_up (it does not)
    run: Run

    @property
    def mine(self) -> bool:
        return self.action in ("start", "resume")


def process_gone(host: str | None, pid: int | None) -> bool:
    """True when ``pid`` ran on this host and no longer exists (elsewhere nothing can be told)."""
    if host != socket.gethostname() or not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _decide(row: RunRow, grace_s: float, max_retries: int) -> str:
    if row.status in ("completed", "pruned"):  # pruned: a search trial stopped for good
        return "completed"
    if row.status == "running" and not process_gone(row.host, row.pid):
        beat = row.heartbeat_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=utcnow().tzinfo)
        if beat is not None and utcnow() - beat < timedelta(seconds=grace_s):
            return "running"
    if row.status == "failed" and row.attempt > max_retries:
        return "gave_up"
    return "resume" if row.attempt > 0 else "start"


def claim_cell(
    registry: Registry, sweep_id: str, cell_key: str, new_run: dict[str, Any], *,
    grace_s: float, max_retries: int, owner: dict[str, Any] | None = None,
) -> Claim:  # fmt: skip
    """Claim the cell for this process, or say why not. ``new_run`` holds the fields of a first row."""
    for _ in range(2):  # a lost insert race is retried once, then the winner's row decides
        try:
            return _claim_once(registry, sweep_id, cell_key, new_run, grace_s, max_retries, owner or {})
        except IntegrityError:
            continue
    return _claim_once(registry, sweep_id, cell_key, new_run, grace_s, max_retries, owner or {})


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
                sweep_id=sweep_id, cell_key=cell_key, status="running", attempt=0,
                heartbeat_at=utcnow(), created_at=utcnow(), **{"packages": {}, **new_run, **owner},
            )  # fmt: skip
            s.add(row)
            s.flush()
            return Claim("start", _run(row))
        action = _decide(row, grace_s, max_retries)
        if action in ("start", "resume"):
            row.status, row.heartbeat_at = "running", utcnow()
            for key, value in owner.items():
                setattr(row, key, value)
            s.flush()
        return Claim(action, _run(row))

"""Following a cell's run that this sweep did not start: one adopted from a sweep that died, or one that
another live sweep runs (see :mod:`crlab.registry.claims` for who watches a run).

A :class:`Watched` handle reads the run from the registry at each poll. It ends when the run no longer
says ``running`` (it completed, failed or was preempted, and recorded it), or when its process is dead by
the one liveness rule (:func:`~crlab.registry.lifecycle.is_alive`) and nobody else is answerable for it:
an adopted run, or one whose watching sweep has gone too. Such a run is settled here (its journal
replayed, else ``failed``), since no exit code can be read from a process that is not this one's child.
Stopping the sweep does not stop a watched run: it trains on, and the next invocation follows it again.
"""

from __future__ import annotations

from pathlib import Path

from crlab.registry import Registry
from crlab.registry.claims import WATCH_EVENT, watcher_alive
from crlab.registry.entities import Run, RunStatus
from crlab.registry.lifecycle import is_alive, settle


class Watched:
    """A :class:`~crlab.sweeps.executors.CellHandle` for a run trained by a process this one did not start."""

    job_id: str | None = None

    def __init__(self, registry: Registry, run: Run, grace_s: float, adopted: bool) -> None:
        self.registry, self.run_id, self.grace_s, self.adopted = registry, run.id, grace_s, adopted

    def poll(self) -> int | None:
        run = self.registry.get_run(self.run_id)
        if run.status != RunStatus.RUNNING:
            return 0
        alive = is_alive(
            run.status, run.host, run.pid, run.heartbeat_at, self.grace_s, self.registry.reach.healthy_for()
        )
        if alive or (not self.adopted and self._watcher_alive()):
            return None  # training, or its own sweep is about to settle it
        log = Path(run.run_dir) / "train.log" if run.run_dir else None
        settle(self.registry, run.id, None, log=str(log) if log and log.exists() else None)
        return 0

    def stop(self) -> None:
        return None  # not this sweep's process: it trains on

    def _watcher_alive(self) -> bool:
        """A watcher on another host is not waited on here: the run is dead by the liveness rule (its
        heartbeat is stale), so whichever of the two settles it first, settles it the same."""
        events = self.registry.events(self.run_id, kind=WATCH_EVENT)
        return watcher_alive(events[-1].payload if events else None, elsewhere=False)

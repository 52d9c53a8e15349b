"""Weights & Biases: one W&B run per registry run, with a stable id across resumes.

The W&B run id is the registry run id, so a resumed run continues the same W&B run (``resume="allow"``).
group = the sweep, job_type = the cell label, config = the resolved config. Files go to the run's own
directory (``<run_dir>/wandb``). Offline by default: ``tracking.mode=online`` (or WANDB_MODE=online)
uploads live; ``wandb sync <run_dir>/wandb/offline-run-*`` uploads an offline run later.

Events (phase switches, resumes, preemptions) are logged as ``event/<kind>`` metrics at their step and
kept as a list in the run summary under ``events``, so they are in the offline files too. An offline run
cannot read its summary back, so a resumed run passes the events it had (from the registry) as
``prior_events``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Tracker:
    """A thin wrapper over a ``wandb`` run; a no-op when tracking is disabled."""

    def __init__(
        self, *, enabled: bool, mode: str, project: str, entity: str | None, tags: list[str],
        run_id: str, name: str, run_dir: Path, config: Mapping[str, Any],
        group: str | None = None, job_type: str | None = None, prior_events: list[dict] | None = None,
    ) -> None:  # fmt: skip
        self.run_id = run_id
        self._events: list[dict[str, Any]] = list(prior_events or [])
        self._run = None
        mode = os.environ.get("WANDB_MODE", mode)
        if not enabled or mode == "disabled":
            return
        import wandb

        wandb_dir = Path(run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project, entity=entity, id=run_id, name=name, group=group, job_type=job_type,
            tags=list(tags), config=dict(config), dir=str(wandb_dir), mode=mode, resume="allow",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )  # fmt: skip

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def dir(self) -> str | None:
        return self._run.dir if self._run is not None else None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._run is not None:
            self._run.log(dict(metrics), step=step)

    def event(self, kind: str, payload: Mapping[str, Any], step: int | None) -> None:
        if self._run is None:
            return
        record = {"kind": kind, "step": step, **payload}
        self._events.append(record)
        self._run.summary["events"] = self._events
        if step is not None:
            self._run.log({f"event/{kind}": 1.0}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None

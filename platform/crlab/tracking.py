"""Weights & Biases: one W&B run per registry run, with a stable id across resumes.

The W&B run id is the registry run id, so a resumed run continues the same W&B run (``resume="allow"``).
group = the sweep, job_type = the cell label, config = the resolved config. Files go to the run's own
directory (``<run_dir>/wandb``). Offline by default: ``tracking.mode=online`` (or WANDB_MODE=online)
uploads live; ``wandb sync <run_dir>/wandb/offline-run-*`` uploads an offline run later.

Charts: every metric is defined against ``train/step`` (logged with each row). ``val/*`` (the selection
set) summarise to their best; ``eval/*`` (the reported set) to their last value, and the value at the best
checkpoint, chosen on the selection metric, is the summary's ``best/*`` with ``best/step``; ``base/*`` is the
base model's evaluation at step 0. :meth:`Tracker.table` logs a W&B Table (sampled rollouts every
``tracking.rollout_table_every`` steps, as verl and TRL do). :func:`log_ablation` puts a sweep's ablation
table and plot in the sweep's group; :func:`offline_runs` lists what ``platform sync`` uploads.

Events (phase switches, resumes, preemptions) are logged as ``event/<kind>`` metrics at their step and
kept as a list in the run summary under ``events``, so they are in the offline files too. An offline run
cannot read its summary back, so a resumed run passes the events it had (from the registry) as
``prior_events``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

STEP_KEY = "train/step"


class TrackingMode(StrEnum):
    """``tracking.mode`` (W&B's own modes; ``WANDB_MODE`` overrides it)."""

    OFFLINE = "offline"  # files under the run's folder, uploaded later by `platform sync`
    ONLINE = "online"
    DISABLED = "disabled"


# the metric families the trainer logs (``reward/rl_mean``, ``time/step_s``, ...), each plotted against the step
FAMILIES = tuple(f"{f}/*" for f in ("reward", "critique", "train", "time", "phase", "event", "response", "batch",
                                     "perf", "code", "actor", "rollouts", "base"))  # fmt: skip
WANDB_SETTINGS = {"silent": True, "console": "off", "x_disable_stats": True}


def define_metrics(run: Any) -> None:
    """Every metric against the training step. The selection set's metrics (``val/*``) summarise to their best;
    the reported set's (``eval/*``) to their last value, since their maximum over evaluations is biased upward:
    the value at the chosen checkpoint is the summary's ``best/*`` (:meth:`Tracker.best`)."""
    run.define_metric(STEP_KEY)
    run.define_metric("val/*", step_metric=STEP_KEY, summary="max")
    run.define_metric("eval/*", step_metric=STEP_KEY, summary="last")
    for family in FAMILIES:
        run.define_metric(family, step_metric=STEP_KEY)


def job_type(run_name: str, seed: int) -> str:
    """A sweep cell's W&B job type: its run name without the seed (``crl_ratio=0.2 s1`` -> ``crl_ratio=0.2``),
    so that W&B groups the seeds of a cell together within the sweep's group."""
    return run_name.removesuffix(f"s{seed}").strip() or "train"


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
        if not enabled or mode == TrackingMode.DISABLED:
            return
        import wandb

        from crlab.redact import redact_text

        sys.argv = [redact_text(arg) for arg in sys.argv]  # W&B records the command line: no password in it
        wandb_dir = Path(run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project, entity=entity, id=run_id, name=name, group=group, job_type=job_type,
            tags=list(tags), config=dict(config), dir=str(wandb_dir), mode=mode, resume="allow",
            settings=wandb.Settings(**WANDB_SETTINGS),
        )  # fmt: skip
        define_metrics(self._run)

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def dir(self) -> str | None:
        return self._run.dir if self._run is not None else None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._run is not None:
            self._run.log({**metrics, STEP_KEY: step}, step=step)

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A W&B Table (e.g. ``rollouts/samples``: prompt, response, reward, verdicts) at ``step``."""
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Table(columns=columns, data=rows), STEP_KEY: step}, step=step)

    def event(self, kind: str, payload: Mapping[str, Any], step: int | None) -> None:
        if self._run is None:
            return
        record = {"kind": kind, "step": step, **payload}
        self._events.append(record)
        self._run.summary["events"] = self._events
        if step is not None:
            self._run.log({f"event/{kind}": 1.0, STEP_KEY: step}, step=step)

    def best(self, step: int, metrics: Mapping[str, float]) -> None:
        """The run's best checkpoint so far (``step``) and its evaluation metrics, as ``best/...`` in the summary."""
        if self._run is not None:
            self._run.summary.update({"best/step": step, **{f"best/{k}": v for k, v in metrics.items()}})

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None


def offline_runs(run_dirs: list[str]) -> list[Path]:
    """The offline W&B runs (``wandb/offline-run-*``) under these run folders, oldest first."""
    found = []
    for run_dir in run_dirs:
        found += sorted(Path(run_dir).glob("wandb/offline-run-*"))
    return found


def log_ablation(
    *, project: str, entity: str | None, mode: str, group: str, run_id: str, folder: Path,
    columns: list[str], rows: list[list[Any]], plot: Path | None, notes: list[str] | None = None,
) -> Path | None:  # fmt: skip
    """Log a sweep's ablation table (with its 95% intervals, paired tests and base row, as the table shows
    them) and plot as a run of job type ``ablation`` in the sweep's group, with the table's notes (how the
    figures were computed, the power) in its summary; returns the W&B run folder (None when tracking is
    disabled)."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode == TrackingMode.DISABLED:
        return None
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project, entity=entity, id=run_id, name=f"{group} ablation", group=group, job_type="ablation",
        dir=str(folder), mode=mode, resume="allow", settings=wandb.Settings(**WANDB_SETTINGS),
    )  # fmt: skip
    logged: dict[str, Any] = {"ablation/table": wandb.Table(columns=columns, data=rows)}
    if plot is not None:
        logged["ablation/plot"] = wandb.Image(str(plot))
    run.log(logged)
    if notes:
        run.summary["ablation/notes"] = "\n".join(notes)
    path = Path(run.dir).parent
    run.finish()
    return path

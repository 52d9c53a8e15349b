"""Plain records the registry hands out. ORM rows stay inside the package; these cross its boundary."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any


class RunStatus(str, Enum):
    """A run's status. ``completed`` and ``pruned`` (a search trial stopped for good) are final; a run in
    any other status can be taken again (see :mod:`crlab.registry.lifecycle`)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PREEMPTED = "preempted"  # checkpointed and stopped on a signal: resumable
    KILLED = "killed"  # interrupted (Ctrl-C) without a checkpoint of its last steps
    PRUNED = "pruned"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.PRUNED)


class EventKind(StrEnum):
    """What a run's event records (the ``kind`` of an :class:`Event`; the trainer writes them)."""

    RESUME = "resume"  # an attempt took the run up again
    CHECKPOINT = "checkpoint"  # a checkpoint was saved
    PREEMPTION = "preemption"  # stopped on a signal, checkpointed
    PHASE_SWITCH = "phase_switch"  # the next phase (response length, CRL scale) began
    EVAL_PROBLEMS = "eval_problems"  # a held-out evaluation's per-problem verdicts (crlab.registry.evidence)
    SWEEP_WATCH = "sweep_watch"  # the sweep process that claimed or adopted the run (crlab.registry.claims)
    OPTUNA_TRIAL = "optuna_trial"  # the search trial a run is (crlab.sweeps.search)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value.value if isinstance(value, Enum) else value


@dataclass(frozen=True)
class Record:
    def to_json(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Sweep(Record):
    id: str
    name: str
    spec: dict[str, Any]
    spec_path: str | None
    created_at: datetime


@dataclass(frozen=True)
class RunFields(Record):
    """What every view of a run holds: all of its registry fields but its config."""

    id: str
    name: str
    sweep_id: str | None
    cell_key: str | None
    status: RunStatus
    attempt: int
    heartbeat_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    job_id: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    packages: dict[str, str] = field(default_factory=dict, repr=False)
    reproduces: str | None = None  # the run this one reproduces (`platform reproduce`)
    wandb_run_id: str | None = None
    run_dir: str | None = None
    journal_seq: int = 0  # the last record of the run's journal the registry has applied
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Run(RunFields):
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    # what produced it (crlab.provenance.run_provenance); empty for runs made before it was recorded
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Metric(Record):
    run_id: str
    step: int
    key: str
    value: float
    time: datetime


@dataclass(frozen=True)
class Event(Record):
    run_id: str
    step: int | None
    kind: str  # an EventKind's value
    payload: dict[str, Any]
    time: datetime


@dataclass(frozen=True)
class Checkpoint(Record):
    run_id: str
    step: int
    path: str
    complete: bool
    created_at: datetime
    best: bool = False  # the run's best checkpoint by its ``eval.select`` metric (at most one per run)


SELECTS = ("best", "last")  # which value of a run's metric judges it: its best, or its final one


def lower_is_better(key: str) -> bool:
    """Which end of a metric is its best: the lowest for losses and divergences (a word of the key's last
    ``/``-part is or ends in ``loss`` or ``kl``: ``loss``, ``actor/pg_loss``, ``actor/kl``, ``actor/ppo_kl``)
    and for times (``time/...``), the highest for everything else (rewards, accuracy, ``eval/pass@1``, the
    paper's "best checkpoint")."""
    words = re.split(r"[^a-z0-9]+", key.rsplit("/", 1)[-1].lower())
    return key.startswith("time/") or any(w.endswith(("loss", "kl")) for w in words)


def improves(key: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of metric ``key`` beats ``best`` (None: nothing yet), in the direction of
    :func:`lower_is_better`. Only a strict improvement counts, so among equal values the earliest stays
    best; NaN never improves."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if lower_is_better(key) else value > best


@dataclass(frozen=True)
class MetricSummary(Record):
    """One metric of one run at a glance: its last value, its lowest and highest, each with its step
    (ties keep the earliest step), and how many steps logged it."""

    run_id: str
    key: str
    last: float
    last_step: int
    min: float
    min_step: int
    max: float
    max_step: int
    n: int

    @property
    def best(self) -> float:
        """The highest value, or the lowest for a loss (see :func:`lower_is_better`)."""
        return self.min if lower_is_better(self.key) else self.max

    @property
    def best_step(self) -> int:
        return self.min_step if lower_is_better(self.key) else self.max_step

    def pick(self, which: str) -> float:
        """``best`` (:attr:`best`) or ``last`` (the value at the run's last logged step of this metric)."""
        if which not in SELECTS:
            raise ValueError(f"select must be one of {', '.join(SELECTS)}, got {which!r}")
        return self.best if which == "best" else self.last


@dataclass(frozen=True)
class ListedRun(RunFields):
    """A run a query found: the fields of :class:`Run` but its config (whole configs are not loaded for a
    list; name config keys as columns, or :meth:`Registry.get_run` one run), its sweep's name, and the
    value of each column asked for, by the name written (``config.data.crl_ratio``,
    ``metrics.reward/rl_mean.last``)."""

    sweep: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

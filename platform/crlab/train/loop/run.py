"""One training run: rollouts, rewards, GRPO updates, phase switches, checkpoints, tracking.

``launch_run`` registers a new run and trains it; ``resume_run`` continues one from its newest complete
checkpoint (same run id, same W&B run, a new attempt). The run's record, its attempts and its liveness are
the registry's (:mod:`crlab.registry.lifecycle`); this module trains and says how it ended. SIGTERM, SIGUSR1
or SIGUSR2 (what Slurm and submitit send before a preemption or a time limit) ends the current step, saves a
checkpoint, marks the run ``preempted`` and exits with code 0.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crlab import config as cfgmod
from crlab.registry import Registry, resolve_db_url
from crlab.registry.entities import Run, RunStatus
from crlab.registry.lifecycle import HEARTBEAT_S, error_line, mark_started, register_run, take_run
from crlab.train.loop.trainer import Trainer

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig


class StopFlag:
    """Set by SIGTERM/SIGUSR1/SIGUSR2; the loop checks it between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum, self.at = signum, time.time()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, self)


RETRY_S = 2.0  # heartbeats while the registry is unreachable


class Heartbeat(threading.Thread):
    """Refreshes the run's heartbeat while a long step runs, so a live run is never taken for stale."""

    def __init__(self, registry: Registry, run_id: str) -> None:
        super().__init__(daemon=True)
        self.registry, self.run_id = registry, run_id
        self.done = threading.Event()

    def run(self) -> None:
        wait = HEARTBEAT_S
        while not self.done.wait(wait):
            try:
                self.registry.heartbeat(self.run_id)
                wait = HEARTBEAT_S
            except Exception:  # the registry is away: not worth killing the run for; beat again as soon
                wait = RETRY_S  # as it is back, so that nothing takes the run for dead


def open_registry(db_url: str | None, cfg: ExperimentConfig | None = None) -> Registry:
    return Registry(resolve_db_url(db_url, cfg.registry_url if cfg is not None else None))


def launch_run(cfg: ExperimentConfig, db_url: str | None = None, reproduces: dict[str, Any] | None = None) -> str:
    """Check, register and train a new run; returns its id. Exits the process on preemption.
    ``reproduces``: the run it reproduces, for ``platform reproduce`` (see ``register_run``)."""
    registry = open_registry(db_url, cfg)
    trainer = Trainer(cfg, registry, run=None)  # loads model and data: bad input fails before registering
    try:
        run = register_run(registry, cfg, reproduces=reproduces)
    except BaseException:
        trainer.close(exit_code=1)  # its sandbox's workers end with it
        raise
    print(f"run {run.id}: {run.run_dir}")
    _train(lambda: trainer, registry, run, resume=False)
    return run.id


def resume_run(run_id: str, db_url: str | None = None, claimed: bool = False) -> str:
    """Continue ``run_id`` as a new attempt. A run that looks alive is refused unless the caller has just
    claimed it (a sweep does, in the registry, before it launches the run)."""
    found = take(run_id, db_url, claimed)
    if found is None:
        return run_id
    registry, run = found
    cfg = cfgmod.from_dict(run.config)
    _train(lambda: Trainer(cfg, registry, run=run), registry, run, resume=True)
    return run.id


def take(run_id: str, db_url: str | None, claimed: bool) -> tuple[Registry, Run] | None:
    """The registry and the run to continue, taken for a new attempt unless already ``claimed``; None
    (said) when it is completed; an error when it is alive."""
    registry = open_registry(db_url)
    run = registry.get_run(run_id) if claimed else take_run(registry, run_id)
    return None if run is None else (registry, run)


def _train(make_trainer: Callable[[], Trainer], registry: Registry, run: Run, resume: bool) -> None:
    """Build the trainer and train, with signal handling. Whatever fails, from the set-up on, ends the run
    ``failed`` with its error; rank 0 alone keeps the run's registry row (heartbeat, status)."""
    from crlab.train.loop.setup import launched_rank

    stop = StopFlag()
    stop.install()
    main = launched_rank() == 0
    if main:
        mark_started(registry, run.id)
    beat = Heartbeat(registry, run.id)
    if main:
        beat.start()
    status, error, trainer = RunStatus.FAILED, None, None
    try:
        trainer = make_trainer()
        status = RunStatus(trainer.train(run, resume=resume, stop=stop))
        if main:
            print(f"run {run.id}: {status} at step {trainer.step} (platform runs show {run.id})", flush=True)
    except BaseException as exc:
        error = error_line(exc)
        status = RunStatus.KILLED if isinstance(exc, KeyboardInterrupt) else RunStatus.FAILED
        raise
    finally:
        beat.done.set()
        if main and not (trainer is not None and trainer.finish(status, error)):
            registry.finish_run(run.id, status, error=error)  # failed in set-up, before its journal
        if trainer is not None:
            trainer.close(exit_code=0 if status in (RunStatus.COMPLETED, RunStatus.PREEMPTED) else 1)

"""One training run: rollouts, rewards, GRPO updates, phase switches, checkpoints, tracking.

``launch_run`` registers a new run and trains it; ``resume_run`` continues one from its newest complete
checkpoint (same run id, same W&B run, attempt + 1). SIGTERM, SIGUSR1 or SIGUSR2 (what Slurm and submitit send
before a preemption or a time limit) ends the current step, saves a checkpoint, marks the run ``preempted`` and exits with code 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from crlab import config as cfgmod
from crlab.config_checks import config_warnings
from crlab.registry import Registry, resolve_db_url
from crlab.registry.claims import process_gone
from crlab.registry.entities import Run
from crlab.train.trainer import Trainer

HEARTBEAT_S = 30.0


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


class Heartbeat(threading.Thread):
    """Refreshes the run's heartbeat while a long step runs, so a live run is never taken for stale."""

    def __init__(self, registry: Registry, run_id: str) -> None:
        super().__init__(daemon=True)
        self.registry, self.run_id = registry, run_id
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_S):
            try:
                self.registry.heartbeat(self.run_id)
            except Exception:  # a missed heartbeat is not worth killing the run for
                continue


def open_registry(db_url: str | None, cfg: DictConfig | None = None) -> Registry:
    return Registry(resolve_db_url(db_url, cfg.registry_url if cfg is not None else None))


def new_run_fields(cfg: DictConfig, run_id: str | None = None) -> dict[str, Any]:
    """The registry fields of a new run of ``cfg``: id, name, config, run directory, provenance."""
    from crlab.provenance import git_state, package_versions
    from crlab.registry.store import new_id

    run_id = run_id or new_id()
    commit, dirty = git_state()
    return {
        "id": run_id, "name": cfg.name, "config": cfgmod.to_dict(cfg),
        "run_dir": str(Path(cfg.paths.runs_dir).expanduser().resolve() / run_id),
        "git_commit": commit, "git_dirty": dirty, "packages": package_versions(), "wandb_run_id": run_id,
    }  # fmt: skip


def write_run_dir(run_dir: str, cfg: DictConfig) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(cfgmod.to_yaml(cfg))


def register_run(registry: Registry, cfg: DictConfig) -> Run:
    """Create the registry row and the run directory (with its resolved config.yaml)."""
    fields = new_run_fields(cfg)
    run = registry.create_run(fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), **fields)
    write_run_dir(run.run_dir, cfg)  # type: ignore[arg-type]
    return run


def launch_run(cfg: DictConfig, db_url: str | None = None) -> str:
    """Check, register and train a new run; returns its id. Exits the process on preemption."""
    for warning in config_warnings(cfg):
        print(f"warning: {warning}")
    registry = open_registry(db_url, cfg)
    trainer = Trainer(cfg, registry, run=None)  # loads model and data: bad input fails before registering
    run = register_run(registry, cfg)
    print(f"run {run.id}: {run.run_dir}")
    _train(trainer, registry, run, resume=False)
    return run.id


def resume_run(run_id: str, db_url: str | None = None, claimed: bool = False) -> str:
    """Continue ``run_id``. A run that looks alive (running, fresh heartbeat) is refused unless the
    caller has just claimed it (the sweep runner does, in the registry, before it launches the run)."""
    found = resumable(run_id, db_url, claimed)
    if found is None:
        return run_id
    registry, run = found
    cfg = cfgmod.from_dict(run.config)
    trainer = Trainer(cfg, registry, run=run)
    _train(trainer, registry, run, resume=True)
    return run.id


def resumable(run_id: str, db_url: str | None, claimed: bool) -> tuple[Registry, Run] | None:
    """The registry and the run to continue; None (said) when it is completed; an error when it is alive."""
    from crlab.errors import RegistryError
    from crlab.registry.store import utcnow

    registry = open_registry(db_url)
    run = registry.get_run(run_id)
    if run.status == "completed":
        print(f"run {run.id} is already completed")
        return None
    age = (utcnow() - run.heartbeat_at).total_seconds() if run.heartbeat_at else None
    if run.status == "running" and not claimed and age is not None and _looks_alive(run, age):
        raise RegistryError(
            f"run {run.id} looks alive (heartbeat {age:.0f} s ago from {run.host} pid {run.pid}); "
            f"stop it first, or wait {3 * HEARTBEAT_S - age:.0f} s if it died"
        )
    return registry, run


def _looks_alive(run: Run, heartbeat_age_s: float) -> bool:
    """On this host, whether its process exists; elsewhere, whether its heartbeat is fresh."""
    if run.host == socket.gethostname() and run.pid:
        return not process_gone(run.host, run.pid)
    return heartbeat_age_s < 3 * HEARTBEAT_S


def _train(trainer: Trainer, registry: Registry, run: Run, resume: bool) -> None:
    """Train with signal handling; rank 0 alone keeps the run's registry row (attempt, heartbeat, status)."""
    from crlab.train.setup import launched_rank

    stop = StopFlag()
    stop.install()
    main = launched_rank() == 0
    if main:
        registry.start_attempt(
            run.id, host=socket.gethostname(), pid=os.getpid(), job_id=os.environ.get("SLURM_JOB_ID")
        )
    beat = Heartbeat(registry, run.id)
    if main:
        beat.start()
    status, error = "failed", None
    try:
        status = trainer.train(run, resume=resume, stop=stop)
    except BaseException as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        status = "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
        raise
    finally:
        beat.done.set()
        if main:
            registry.finish_run(run.id, status, error=error)
        trainer.close(exit_code=0 if status in ("completed", "preempted") else 1)

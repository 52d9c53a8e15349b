"""A run's lifecycle, in one place: how its record is made, when it counts as alive, how it is taken (an
attempt), started and ended.

Statuses are :class:`~crlab.registry.entities.RunStatus`. A run is created ``running`` by the process that
will train it (``platform run``), or claimed by a sweep for one of its cells (:mod:`crlab.registry.claims`),
or taken over by ``platform resume``. **Every take counts an attempt at once**, before anything can fail, so
an error at any point (a sandbox that cannot start, a model that cannot load, a crash in step 3) uses up an
attempt and no retry loop can go on for ever. The training process then says where it runs
(:func:`mark_started`) and how it ended (``Registry.finish_run``, with the error text on failure). A process that
dies without saying (SIGKILL, out of memory) is settled by whoever watched it (:func:`settle`).

**Liveness** (:func:`is_alive`) is one rule: a ``running`` run whose process ran on this host is alive
while that process exists, checked directly. Elsewhere it is alive while its heartbeat (refreshed every
``HEARTBEAT_S``) is younger than the grace period (``GRACE_S`` unless a sweep says otherwise), and a stale
heartbeat is believed only by a process that has itself seen the registry healthy for a whole grace period:
during a registry outage no heartbeat gets through, and a run still training must not be taken over when the
registry comes back (:mod:`crlab.registry.retry`).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlab import config as cfgmod
from crlab.errors import RegistryError
from crlab.registry.entities import Run, RunStatus
from crlab.registry.journal import replay
from crlab.registry.store import Registry, utcnow

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

HEARTBEAT_S = 30.0
GRACE_S = 300.0  # ten missed heartbeats


def process_state(host: str | None, pid: int | None) -> bool | None:
    """Whether ``pid`` of ``host`` exists, checked directly: True or False on this host, None elsewhere
    (or with no pid), where nothing can be told."""
    if host != socket.gethostname() or not pid:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but is not yet reaped (a cell whose sweep died is nobody's child)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (macOS): os.kill is all there is
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def heartbeat_age(heartbeat_at: datetime | None) -> float | None:
    if heartbeat_at is None:
        return None
    if heartbeat_at.tzinfo is None:
        heartbeat_at = heartbeat_at.replace(tzinfo=utcnow().tzinfo)
    return (utcnow() - heartbeat_at).total_seconds()


def is_alive(
    status: str, host: str | None, pid: int | None, heartbeat_at: datetime | None,
    grace_s: float = GRACE_S, watched_s: float = float("inf"),
) -> bool:  # fmt: skip
    """The one liveness rule (see the module docstring). ``watched_s``: how long the caller has seen the
    registry healthy without a break (:meth:`Reachability.healthy_for`)."""
    if status != RunStatus.RUNNING:
        return False
    here = process_state(host, pid)
    if here is not None:
        return here  # checked directly: whatever its heartbeat says
    if watched_s < grace_s:
        return True  # its heartbeat may be old only because the registry was away: not judged yet
    age = heartbeat_age(heartbeat_at)
    return age is not None and age < grace_s


def owner() -> dict[str, Any]:
    """Who holds a run: this host and process."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


# -- a run's record ---------------------------------------------------------------------------------
def new_run_fields(cfg: ExperimentConfig, run_id: str | None = None) -> dict[str, Any]:
    """The registry fields of a new run of ``cfg``: id, name, config, run directory, provenance (git
    commit, dirty flag and package versions also in their own columns, which queries read)."""
    from crlab.provenance import run_provenance
    from crlab.registry.store import new_id

    run_id = run_id or new_id()
    made = run_provenance(cfg)
    return {
        "id": run_id, "name": cfg.name, "config": cfgmod.to_dict(cfg),
        "run_dir": str(Path(cfg.paths.runs_dir).expanduser().resolve() / run_id),
        "git_commit": made["git"]["commit"], "git_dirty": made["git"]["dirty"], "packages": made["packages"],
        "provenance": made, "wandb_run_id": run_id,
    }  # fmt: skip


def write_run_dir(run_dir: str, cfg: ExperimentConfig) -> None:
    """The run's folder with its resolved ``config.yaml``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(cfgmod.to_yaml(cfg))


def register_run(registry: Registry, cfg: ExperimentConfig, reproduces: dict[str, Any] | None = None) -> Run:
    """A new run, taken by this process (attempt 1, running), with its folder and ``config.yaml``.
    ``reproduces`` (``platform reproduce``): ``{"run": id, "forced": bool, "differences": [...]}``, kept as
    the run's ``reproduces`` field and a ``reproduces`` event."""
    fields = new_run_fields(cfg)
    if reproduces is not None:
        fields["reproduces"] = reproduces["run"]
    run = registry.create_run(
        fields.pop("name"), fields.pop("config"), run_id=fields.pop("id"), status=RunStatus.RUNNING,
        attempt=1, heartbeat_at=utcnow(), started_at=utcnow(), **owner(), **fields,
    )  # fmt: skip
    if reproduces is not None:
        registry.log_event(run.id, "reproduces", reproduces, step=0)
    write_run_dir(run.run_dir or "", cfg)
    return run


# -- taking, starting and ending a run --------------------------------------------------------------
def take_run(registry: Registry, ref: str) -> Run | None:
    """Take ``ref`` over for ``platform resume`` (an attempt); None when it is completed. A run that is
    alive is refused with an error that says how to stop it, or how long until it counts as dead."""
    run = registry.get_run(ref)
    if run.status.final:
        print(f"run {run.id} is already {run.status}")
        return None
    if is_alive(run.status, run.host, run.pid, run.heartbeat_at):
        age = heartbeat_age(run.heartbeat_at) or 0.0
        raise RegistryError(
            f"run {run.id} looks alive (heartbeat {age:.0f} s ago from {run.host} pid {run.pid}); "
            f"stop it first, or wait {GRACE_S - age:.0f} s if it died"
        )
    return registry.start_attempt(run.id, **owner())


def mark_started(registry: Registry, run_id: str) -> Run:
    """The training process of an attempt says where it runs (the attempt was counted when it was taken)."""
    return registry.update_run(
        run_id, heartbeat_at=utcnow(), job_id=os.environ.get("SLURM_JOB_ID"), **owner()
    )


def error_line(exc: BaseException) -> str:
    """One line for a run's ``error``: the exception's class and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def settle(registry: Registry, run_id: str, exit_code: int | None, log: str | None = None) -> Run:
    """After a run's process exited: what its journal holds and the registry lacks is sent first (it ended
    while the registry was away); a run still ``running`` then died before it could say how it ended.
    ``exit_code`` None: the process was not the caller's child (a cell adopted from a sweep that died), so
    no exit code could be read."""
    run = registry.get_run(run_id)
    if run.status == RunStatus.RUNNING and replay(registry.engine, run.id, run.run_dir):
        run = registry.get_run(run_id)
    if run.status != RunStatus.RUNNING:
        return run
    if exit_code is None:
        how = f"its process (pid {run.pid} on {run.host}) ended without saying how"
    else:
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exited with code {exit_code}"
    return registry.finish_run(run_id, RunStatus.FAILED, error=f"{how}{f' (see {log})' if log else ''}")

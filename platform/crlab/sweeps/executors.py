"""Where a sweep's cells run: subprocesses on this machine (``local``) or one Slurm job per cell (``slurm``).

Every cell runs the same command, ``python -m crlab resume RUN_ID --claimed``: a fresh cell starts from
scratch, an interrupted one continues from its newest complete checkpoint. An executor turns a claimed run
into a :class:`CellHandle` the runner polls.

``local``
    ``executor.parallel`` cells at a time (``auto``: as many as the visible GPUs allow, else 1). A cell
    runs ``executor.nproc_per_cell`` data-parallel processes (default 1); more than one are started by the
    DeepSpeed launcher. Where GPUs exist, each process gets a GPU of its own. Output goes to ``train.log``
    in the run directory. Stopping the sweep (Ctrl-C, SIGTERM) asks every process of every cell to
    checkpoint and stop: each cell ends ``preempted``.
``slurm``
    One job per cell through submitit (``executor.slurm`` holds submitit's parameters, e.g.
    ``slurm_partition``, ``timeout_min``, ``gpus_per_node``). On preemption or requeue Slurm sends SIGTERM,
    and before a time limit submitit's SIGUSR2: the run checkpoints and ends ``preempted``, the job is
    requeued (submitit requeues it on a time limit) and the requeued job resumes the run. Stopping the
    sweep only stops watching: the jobs go on, and rerunning the command watches them again (a cell whose
    job is still queued or running is never submitted twice). Logs go to ``slurm/`` in the run directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from crlab.errors import ConfigError, NotAvailable
from crlab.registry.entities import Run
from crlab.registry.lifecycle import GRACE_S
from crlab.registry.retry import DEFAULT_RETRY_S
from crlab.train.engine.launch import cell_command, signal_ranks
from crlab.yaml_lines import reject_unknown_keys

# Slurm job states after which a job runs no more (anything else, e.g. PENDING after a requeue, is alive).
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
    "PREEMPTED", "REVOKED",
}  # fmt: skip


def cell_env(db_url: str) -> dict[str, str]:
    """A cell's environment: this process's, with the registry URL, and without ``WANDB_SERVICE`` (set by a
    W&B run in this process: a cell that inherits it joins that W&B service, where a killed cell's run id
    stays "in use" and its resume cannot start)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "CRLAB_DB_URL": db_url}


class ExecutorKind(StrEnum):
    """Where a sweep's cells run (``executor.kind``)."""

    LOCAL = "local"  # processes on this machine
    SLURM = "slurm"  # Slurm jobs, through submitit


@dataclass(frozen=True)
class ExecutorConfig:
    """A sweep's ``executor:`` section (the only place its defaults live)."""

    kind: str = ExecutorKind.LOCAL.value  # an ExecutorKind
    parallel: int | str = 1  # local: cells at a time, or "auto" (one per visible GPU)
    nproc_per_cell: int = 1  # data-parallel ranks per cell
    max_retries: int = 2  # a failed cell gets at most max_retries + 1 attempts, whatever the failure
    heartbeat_grace_s: float = GRACE_S  # a run elsewhere whose heartbeat is older is taken for dead
    registry_retry_s: float = DEFAULT_RETRY_S  # how long the sweep rides out a registry outage, then stops
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit parameters

    @classmethod
    def from_mapping(cls, data: Any, where: Any = lambda _key: None) -> ExecutorConfig:
        """Checked: unknown keys and bad values are ConfigErrors at ``where(key)`` (file:line)."""
        if not isinstance(data, dict):
            raise ConfigError(
                "'executor' must be a mapping, e.g. {kind: local, parallel: 2}", where("executor")
            )
        keys = tuple(f.name for f in fields(cls))
        reject_unknown_keys(data, keys, "executor", where, prefix="executor.")
        cfg = cls(**data)
        problem = cfg._problem()
        if problem is not None:
            key, message = problem
            raise ConfigError(message, where(f"executor.{key}"))
        return cfg

    def _problem(self) -> tuple[str, str] | None:
        def count(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if self.kind not in tuple(ExecutorKind):
            return "kind", f"unknown executor kind {self.kind!r}; valid: {', '.join(ExecutorKind)}"
        if not (self.parallel == "auto" or (count(self.parallel) and self.parallel >= 1)):
            return (
                "parallel",
                f"executor.parallel must be a positive integer or 'auto', got {self.parallel!r}",
            )
        if not count(self.nproc_per_cell) or self.nproc_per_cell < 1:
            return (
                "nproc_per_cell",
                f"executor.nproc_per_cell must be a positive integer, got {self.nproc_per_cell!r}",
            )
        if not count(self.max_retries) or self.max_retries < 0:
            return "max_retries", f"executor.max_retries must be an integer >= 0, got {self.max_retries!r}"
        if not isinstance(self.heartbeat_grace_s, (int, float)) or self.heartbeat_grace_s <= 0:
            return (
                "heartbeat_grace_s",
                f"executor.heartbeat_grace_s must be > 0 seconds, got {self.heartbeat_grace_s!r}",
            )
        if not isinstance(self.registry_retry_s, (int, float)) or self.registry_retry_s < 0:
            return (
                "registry_retry_s",
                f"executor.registry_retry_s must be >= 0 seconds, got {self.registry_retry_s!r}",
            )
        if not isinstance(self.slurm, dict):
            return "slurm", "executor.slurm must map submitit parameters to values (e.g. timeout_min: 60)"
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Executor(Protocol):
    """Where cells run. ``parallel``: how many at once; ``detaches``: whether cells outlive the sweep."""

    name: str
    parallel: int
    detaches: bool

    def launch(self, run: Run, db_url: str) -> CellHandle:
        """Start the claimed ``run``'s cell."""

    def adopt(self, run: Run) -> CellHandle | None:
        """Watch a cell that is still running from an earlier invocation, where the executor can."""


class CellHandle(Protocol):
    job_id: str | None

    def poll(self) -> int | None:
        """None while the cell's process or job lives; else its exit code (0 = ended normally)."""

    def stop(self) -> None:
        """Ask the cell to checkpoint and stop (local), or nothing (a Slurm job goes on)."""


class _Process:
    def __init__(self, proc: subprocess.Popen, gpus: list[str], free_gpus: list[str], nproc: int) -> None:
        self.proc, self.gpus, self._free, self.nproc = proc, gpus, free_gpus, nproc
        self.job_id: str | None = None

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.gpus:
            self._free.extend(self.gpus)
            self.gpus = []
        return code

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        if self.nproc == 1:
            self.proc.send_signal(signal.SIGTERM)
            return
        # The launcher would SIGTERM its ranks one after another (and their sandbox workers with them); ask
        # every rank at once instead, so that they agree to checkpoint together and exit.
        signal_ranks(self.proc.pid)


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


class LocalExecutor:
    """Cells as subprocesses of the sweep process."""

    name = "local"
    detaches = False

    def __init__(self, settings: ExecutorConfig) -> None:
        self.gpus = _visible_gpus()
        self.nproc = settings.nproc_per_cell
        if self.gpus and self.nproc > len(self.gpus):
            raise ConfigError(
                f"executor.nproc_per_cell={self.nproc} but only {len(self.gpus)} GPU(s) are visible"
            )
        parallel = settings.parallel
        self.parallel = max(1, len(self.gpus) // self.nproc) if parallel == "auto" else int(parallel)
        self._free = list(self.gpus)

    def launch(self, run: Run, db_url: str) -> CellHandle:
        env = cell_env(db_url)
        gpus = [self._free.pop(0) for _ in range(self.nproc)] if len(self._free) >= self.nproc else []
        if gpus and self.nproc == 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[0]
        log_dir = Path(run.run_dir or ".")
        log_dir.mkdir(parents=True, exist_ok=True)
        command = cell_command(run.id, self.nproc, gpus)
        with open(log_dir / "train.log", "ab") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        return _Process(proc, gpus, self._free, self.nproc)

    def adopt(self, run: Run) -> CellHandle | None:
        return None  # a local cell lives only as long as the sweep process that launched it


def require_command(command: str, what: str) -> None:
    if shutil.which(command) is None:
        raise NotAvailable(
            f"the {what} executor needs `{command}` on PATH, and there is none on this machine; "
            "run the sweep from a Slurm login node, or use executor.kind=local"
        )

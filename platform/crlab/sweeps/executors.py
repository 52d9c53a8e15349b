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
from pathlib import Path
from typing import Any, Protocol

from crlab.errors import ConfigError, NotAvailable
from crlab.registry.entities import Run
from crlab.train.launch import cell_command, signal_ranks

# Slurm job states after which a job runs no more (anything else, e.g. PENDING after a requeue, is alive).
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
    "PREEMPTED", "REVOKED",
}  # fmt: skip


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

    def __init__(self, settings: dict[str, Any]) -> None:
        self.gpus = _visible_gpus()
        self.nproc = settings.get("nproc_per_cell", 1)
        if isinstance(self.nproc, bool) or not isinstance(self.nproc, int) or self.nproc < 1:
            raise ConfigError(f"executor.nproc_per_cell must be a positive integer, got {self.nproc!r}")
        if self.gpus and self.nproc > len(self.gpus):
            raise ConfigError(f"executor.nproc_per_cell={self.nproc} but only {len(self.gpus)} GPU(s) are visible")
        parallel = settings.get("parallel", 1)
        if parallel == "auto":
            parallel = max(1, len(self.gpus) // self.nproc)
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise ConfigError(f"executor.parallel must be a positive integer or 'auto', got {parallel!r}")
        self.parallel = parallel
        self._free = list(self.gpus)

    def launch(self, run: Run, db_url: str) -> CellHandle:
        env = {**os.environ, "CRLAB_DB_URL": db_url}
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


def make_executor(settings: dict[str, Any]) -> LocalExecutor | Any:
    """The executor named by ``executor.kind``; fails (exit 2) before anything is registered if unusable."""
    kind = settings.get("kind", "local")
    if kind == "local":
        return LocalExecutor(settings)
    if kind == "slurm":
        from crlab.sweeps.slurm import SlurmExecutor

        return SlurmExecutor(settings)
    raise ConfigError(f"unknown executor kind {kind!r}; valid: local, slurm")


def require_command(command: str, what: str) -> None:
    if shutil.which(command) is None:
        raise NotAvailable(
            f"the {what} executor needs `{command}` on PATH, and there is none on this machine; "
            "run the sweep from a Slurm login node, or use executor.kind=local"
        )

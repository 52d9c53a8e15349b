"""The Slurm executor: one submitit job per sweep cell (see :mod:`crlab.sweeps.executors`).

A cell with ``executor.nproc_per_cell`` > 1 (or submitit's ``tasks_per_node``/``nodes``) runs one Slurm
task per data-parallel rank; each task learns its rank and the rendezvous from submitit's view of Slurm.

Job states come from ``squeue`` (not ``sacct``, so clusters without accounting work too). A job counts as
ended once ``squeue`` has shown it in a final state, or not at all, on two polls in a row: a requeued job
passes through short-lived states on its way back to PENDING.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from crlab.errors import ConfigError
from crlab.registry.entities import Run, RunStatus
from crlab.sweeps.executors import FINAL_STATES, CellHandle, ExecutorConfig, require_command
from crlab.train.engine.launch import cell_command


class CellJob:
    """What a Slurm job runs: the cell's ``crlab resume`` in a child process, with its exit code.

    On submitit's time-limit signal (SIGUSR2), :meth:`checkpoint` asks the run to checkpoint and stop
    (SIGUSR1), waits for it, and hands submitit the same cell to requeue; the requeued job resumes the run.
    """

    def __init__(self, run_id: str, db_url: str) -> None:
        self.run_id, self.db_url = run_id, db_url
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "db_url": self.db_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run_id"], state["db_url"])  # type: ignore[misc]

    def __call__(self) -> str:
        import submitit

        from crlab.registry import Registry
        from crlab.registry.lifecycle import owner

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:  # one task per data-parallel rank, on one or more nodes
            import torch

            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=torch.cuda.is_available()
            )
        if int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and job.global_rank == 0:
            Registry(self.db_url).start_attempt(self.run_id, **owner())  # a requeued job takes the run again
        from crlab.sweeps.executors import cell_env

        env = cell_env(self.db_url)
        self._proc = subprocess.Popen(cell_command(self.run_id), env=env)
        code = self._proc.wait()
        status = Registry(self.db_url).get_run(self.run_id).status
        if code != 0 and status != RunStatus.COMPLETED:
            raise RuntimeError(f"run {self.run_id} exited with code {code} (status {status})")
        return status

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
            self._proc.wait()
        return DelayedSubmission(CellJob(self.run_id, self.db_url))


_CACHE: dict[str, Any] = {"at": 0.0, "states": {}}


def job_states(job_ids: list[str], max_age_s: float = 1.0) -> dict[str, str]:
    """Slurm state of each job ``squeue`` still knows (jobs it has forgotten are absent).

    One ``squeue`` call serves every job polled within ``max_age_s``.
    """
    if not job_ids:
        return {}
    if time.monotonic() - _CACHE["at"] > max_age_s:
        try:
            out = subprocess.run(
                ["squeue", "-h", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return {j: "UNKNOWN" for j in job_ids}  # squeue unreachable: keep treating the jobs as alive
        _CACHE["states"] = dict(line.split("|", 1) for line in out.stdout.splitlines() if "|" in line)
        _CACHE["at"] = time.monotonic()
    return {j: _CACHE["states"][j] for j in job_ids if j in _CACHE["states"]}


class _Job:
    def __init__(self, job_id: str) -> None:
        self.job_id: str | None = job_id
        self._ended_polls = 0

    def poll(self) -> int | None:
        state = job_states([self.job_id or ""]).get(self.job_id or "")
        if state is not None and state not in FINAL_STATES:
            self._ended_polls = 0
            return None
        self._ended_polls += 1
        if self._ended_polls < 2:
            return None
        return 0 if state in (None, "COMPLETED") else 1

    def stop(self) -> None:
        return None  # the job goes on; rerunning the sweep watches it again


class SlurmExecutor:
    name = "slurm"
    detaches = True

    def __init__(self, settings: ExecutorConfig) -> None:
        require_command("sbatch", "slurm")
        require_command("squeue", "slurm")
        self.params = dict(settings.slurm)
        nproc = settings.nproc_per_cell
        if nproc != 1:  # data-parallel ranks are Slurm tasks (times `nodes` for several nodes)
            self.params.setdefault("tasks_per_node", nproc)
        self.parallel = 1 << 30  # Slurm decides how many run at once
        self._check_params()

    def _check_params(self) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder="crlab-check-only", cluster="slurm")  # creates no folder
        try:
            executor.update_parameters(**self.params)
        except (NameError, ValueError, TypeError) as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(
                f"executor.slurm: {first} (e.g. slurm_partition, timeout_min, gpus_per_node, cpus_per_task)"
            ) from None

    def launch(self, run: Run, db_url: str) -> CellHandle:
        import submitit

        from crlab.registry import Registry

        folder = Path(run.run_dir or ".") / "slurm"
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(name=f"crlab-{run.id}", **self.params)
        job = executor.submit(CellJob(run.id, db_url))
        Registry(db_url).update_run(run.id, job_id=str(job.job_id))
        return _Job(str(job.job_id))

    def adopt(self, run: Run) -> CellHandle | None:
        """Watch the run's job instead of submitting another one, if it is still queued or running."""
        if not run.job_id:
            return None
        state = job_states([run.job_id], max_age_s=0).get(run.job_id)
        return _Job(run.job_id) if state is not None and state not in FINAL_STATES else None

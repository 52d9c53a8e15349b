"""The executor a sweep's ``executor.kind`` names: local processes, or Slurm jobs through submitit.

Kept apart from :mod:`crlab.sweeps.executors` (the protocol and the local executor) so that the Slurm
executor, which builds on that protocol, is imported only when it is asked for, and no module imports the
other back.
"""

from __future__ import annotations

from crlab.sweeps.executors import Executor, ExecutorConfig, ExecutorKind, LocalExecutor


def make_executor(settings: ExecutorConfig) -> Executor:
    """The executor named by ``executor.kind``; fails (exit 2) before anything is registered if unusable."""
    if settings.kind == ExecutorKind.SLURM:
        from crlab.sweeps.slurm import SlurmExecutor

        return SlurmExecutor(settings)
    return LocalExecutor(settings)

"""Data-parallel runs on one machine: the command that starts a run's ranks under the DeepSpeed launcher,
and ``platform run --nproc N`` / ``platform resume --nproc N``.

The parent process checks the config, the model path and the data, registers the run (so that every rank
trains the same registry row), then starts ``crlab resume RUN_ID --claimed`` on ``N`` ranks. SIGTERM or
Ctrl-C to the parent goes to every rank at once as SIGUSR1 (the DeepSpeed launcher would SIGTERM them one
after another, their sandbox workers with them): the ranks agree to checkpoint together and stop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig


def cell_command(run_id: str, nproc: int = 1, gpus: list[str] | None = None) -> list[str]:
    """The command that trains ``run_id``: ``crlab resume``, under the DeepSpeed launcher for several ranks."""
    resume = ["resume", run_id, "--claimed"]
    if nproc == 1:
        return [sys.executable, "-m", "crlab", *resume]
    where = ["--include", f"localhost:{','.join(gpus)}"] if gpus else ["--num_gpus", str(nproc)]
    return [
        sys.executable, "-m", "deepspeed.launcher.runner", *where, "--master_port", str(_free_port()),
        "--no_local_rank", "--module", "crlab", *resume,
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signal_ranks(launcher_pid: int, signum: int = signal.SIGUSR1) -> int:
    """Send ``signum`` to every rank (``crlab resume`` process) under the launcher; returns how many."""
    import psutil

    sent = 0
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            argv = child.cmdline()
            launcher = any("deepspeed.launcher" in arg for arg in argv)  # runner and launch
            if {"crlab", "resume"} <= set(argv) and not launcher:
                child.send_signal(signum)
                sent += 1
        except psutil.Error:
            continue
    return sent


def run_ranks(run_id: str, nproc: int, env: dict[str, str] | None = None) -> int:
    """Train ``run_id`` on ``nproc`` ranks here, passing SIGTERM/SIGINT on to them; returns the exit code."""
    proc = subprocess.Popen(cell_command(run_id, nproc), env=env)

    def forward(_signum: int, _frame: Any) -> None:
        signal_ranks(proc.pid)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def launch_parallel(cfg: ExperimentConfig, nproc: int, db_url: str | None = None) -> int:
    """Check, register and train a new run on ``nproc`` ranks; returns the launcher's exit code."""
    from crlab.registry.lifecycle import register_run
    from crlab.train.loop import setup
    from crlab.train.loop.run import open_registry

    setup.check_world(cfg, nproc)
    setup.check_model_path(cfg.model.path)
    setup.load_sources(cfg)  # bad data fails before anything is registered
    registry = open_registry(db_url, cfg)
    run = register_run(registry, cfg)
    print(f"run {run.id}: {run.run_dir} ({nproc} data-parallel ranks)")
    return run_ranks(run.id, nproc, {**os.environ, "CRLAB_DB_URL": registry.url})

"""SIGKILL of one process of a running sweep, the others left alone (real sweeps of the tiny coder).

- The cell's training process alone: the sweep settles the run ``failed`` ("killed by signal 9") and runs it
  again, from its newest checkpoint, to the end; the sweep exits 0.
- One rank of a two-rank (data-parallel) cell: the other rank stops at its next collective, the launcher
  ends the cell, and the sweep runs it again from its newest checkpoint, on both ranks, to the end.
- The sweep process alone: tests/sweeps/test_exit_codes.py (its cell trains on; a rerun adopts it).
(SIGKILL of both at once, a machine crash, is tests/sweeps/test_runner.py.)
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = (  # a mini-batch of one prompt per rank
    "{{grpo.max_steps: {steps}, checkpoint.every: 2, data.rl_source: 'tiny:16', grpo.prompts_per_step: {prompts}, "
    "grpo.mini_batch_size: {nproc}, reward.sandbox_workers: 1}}"
)


def _sweep(tmp_path: Path, env: dict[str, str], steps: int, nproc: int = 1) -> list[str]:
    """The command of a one-cell sweep of ``steps`` steps, on ``nproc`` data-parallel ranks."""
    spec = tmp_path / "one.yaml"
    spec.write_text(
        f"name: kills\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: [0.2]\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\nexecutor: {{nproc_per_cell: {nproc}}}\n"
    )
    return [
        sys.executable,
        "-m",
        "crlab",
        "sweep",
        str(spec),
        f"overrides={OVERRIDES.format(steps=steps, prompts=2 * nproc, nproc=nproc)}",
    ]


@pytest.fixture
def env(tiny_cache: str, tmp_path: Path, child_env: dict[str, str]) -> dict[str, str]:
    return {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}


def _cell_after_first_checkpoint(
    url: str, sweep: subprocess.Popen, rank: int = 0
) -> tuple[str, psutil.Process]:
    """The run id and training process (of ``rank``) of the sweep's cell, once it has a complete checkpoint."""
    deadline = time.time() + 600
    with Registry(url) as reg:
        while time.time() < deadline and sweep.poll() is None:
            runs = reg.list_runs()
            if runs and reg.checkpoints(runs[0].id, complete_only=True):
                return runs[0].id, _trainer(sweep.pid, rank)
            time.sleep(0.2)
    raise AssertionError("the cell saved no checkpoint while the sweep ran")


def _trainer(sweep_pid: int, rank: int) -> psutil.Process:
    """The `crlab resume` process of ``rank`` under the sweep (under the DeepSpeed launcher for several)."""
    found = []
    for child in psutil.Process(sweep_pid).children(recursive=True):
        argv = child.cmdline()
        if "resume" in argv and not any("deepspeed.launcher" in arg for arg in argv):
            found.append(child)
    (process,) = [p for p in found if p.environ().get("RANK", "0") == str(rank)]
    return process


def _one_row_per_step(reg: Registry, run_id: str, steps: int) -> None:
    rows = collections.Counter((m.key, m.step) for m in reg.metrics(run_id))
    assert set(rows.values()) == {1} and max(step for _, step in rows) == steps


@pytest.mark.slow
def test_a_cell_killed_alone_is_run_again_from_its_checkpoint(env: dict[str, str], tmp_path: Path) -> None:
    cmd = _sweep(tmp_path, env, steps=6)
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            run_id, cell = _cell_after_first_checkpoint(env["CRLAB_DB_URL"], proc)
            cell.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=900) == 0, (tmp_path / "out.txt").read_text()[-3000:]
        finally:
            proc.kill()
    assert "killed by signal 9" in (tmp_path / "out.txt").read_text()
    with Registry(env["CRLAB_DB_URL"]) as reg:
        run = reg.get_run(run_id)
        assert (run.status, run.attempt) == ("completed", 2)
        (event,) = reg.events(run_id, kind="resume")
        assert event.payload["from_step"] >= 2  # from its checkpoint, not from scratch
        _one_row_per_step(reg, run_id, 6)


@pytest.mark.slow
def test_a_data_parallel_rank_killed_alone_is_run_again_on_both_ranks(
    env: dict[str, str], tmp_path: Path
) -> None:
    cmd = _sweep(tmp_path, env, steps=6, nproc=2)
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            run_id, rank1 = _cell_after_first_checkpoint(env["CRLAB_DB_URL"], proc, rank=1)
            rank1.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=900) == 0, (tmp_path / "out.txt").read_text()[-3000:]
        finally:
            proc.kill()
    assert re.search(r"failed after step \d+ \(attempt 1\)", (tmp_path / "out.txt").read_text())  # rank 0 too
    with Registry(env["CRLAB_DB_URL"]) as reg:
        run = reg.get_run(run_id)
        assert (run.status, run.attempt) == ("completed", 2)
        (event,) = reg.events(run_id, kind="resume")
        assert event.payload["from_step"] >= 2
        _one_row_per_step(reg, run_id, 6)
        newest = max(reg.checkpoints(run_id, complete_only=True), key=lambda c: c.step)
        assert newest.step == 6 and len(list(Path(newest.path).glob("rng_state_rank*.pt"))) == 2

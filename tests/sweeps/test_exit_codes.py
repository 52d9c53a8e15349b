"""A sweep's exit code tells the truth (real sweeps of the tiny coder, real processes, a real registry):

- while a sweep runs its cell, a second one with ``--no-wait`` exits 3 naming the cell; once the first is
  SIGKILLed (its cell trains on), a rerun adopts the cell, waits for it, prints it completed in its table
  and ablation and exits 0; adopting spends no attempt (the cell's own attempt goes on);
- a cell killed ``max_retries + 1`` times ends failed, exit 1, with a line naming ``--retry-failed``; the
  rerun with ``--retry-failed`` completes it, with every step's metrics equal to an undisturbed run's.

(Two sweeps of one spec started together, both exiting 0 with every cell completed: tests/sweeps/test_runner.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = (
    "{{grpo.max_steps: {steps}, checkpoint.every: 2, data.rl_source: 'tiny:16', grpo.prompts_per_step: 2, "
    "grpo.mini_batch_size: 1, reward.sandbox_workers: 1, eval.source: null, tracking.enabled: false}}"
)
TIMING = ("time/", "perf/")  # wall-clock metrics: never equal between two runs


def _cmd(tmp_path: Path, name: str, ratios: str, steps: int, retries: int = 2, *args: str) -> list[str]:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: {ratios}\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\nexecutor: {{max_retries: {retries}}}\n"
    )
    overrides = f"overrides={SMALL.format(steps=steps)}"
    return [sys.executable, "-m", "crlab", "sweep", str(spec), overrides, *args]


@pytest.fixture
def env(tiny_cache: str, tmp_path: Path, child_env: dict[str, str]) -> dict[str, str]:
    return {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _first_checkpoint(url: str, sweep: subprocess.Popen) -> str:
    deadline = time.time() + 300
    with Registry(url) as reg:
        while time.time() < deadline and sweep.poll() is None:
            runs = reg.list_runs()
            if runs and reg.checkpoints(runs[0].id, complete_only=True):
                return runs[0].id
            time.sleep(0.2)
    raise AssertionError("the cell saved no checkpoint while the sweep ran")


def _steps(reg: Registry, run_id: str) -> dict[tuple[str, int], float]:
    return {(m.key, m.step): m.value for m in reg.metrics(run_id) if not m.key.startswith(TIMING)}


@pytest.mark.slow
def test_a_rerun_adopts_the_cell_of_a_killed_sweep_and_waits_for_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    slow = {**env, "CRLAB_FAULT": "sleep:2"}  # the cell outlasts the two reruns' start
    cmd = _cmd(tmp_path, "adopt", "[0.2]", steps=12)
    first = subprocess.Popen(
        cmd, env=slow, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        run_id = _first_checkpoint(env["CRLAB_DB_URL"], first)
        elsewhere = _run([*cmd, "--no-wait"], env)  # the first sweep is alive and runs the cell
        assert elsewhere.returncode == 3, elsewhere.stderr[-3000:]
        assert (
            "returned before the end" in elsewhere.stderr
            and "data.crl_ratio=0.2 seed=0 (running)" in elsewhere.stderr
        )
        with Registry(env["CRLAB_DB_URL"]) as reg:
            before = reg.get_run(run_id)
        os.kill(first.pid, signal.SIGKILL)  # the sweep alone: its cell trains on
        first.wait()
        again = _run(cmd, env)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # whatever is left of the first sweep's session
    assert again.returncode == 0, again.stderr[-3000:]
    assert "adopted (its sweep is gone)" in again.stdout
    table, ablation = again.stdout.split("| data.crl_ratio |")
    assert "] completed at step 12" in table and f"│ {run_id} │ completed " in table
    assert "| 0.2 |" in ablation and run_id in ablation  # counted in the ablation
    with Registry(env["CRLAB_DB_URL"]) as reg:
        run = reg.get_run(run_id)
        assert before.status == "running" and (run.status, run.attempt) == ("completed", before.attempt)
        rows = [(m.key, m.step) for m in reg.metrics(run_id)]
        assert len(rows) == len(set(rows)) and max(step for _, step in rows) == 12  # trained once


@pytest.mark.slow
def test_a_cell_out_of_retries_says_retry_failed_which_completes_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    calm_cmd = [*_cmd(tmp_path, "calm", "[0.0]", steps=4), "--json"]  # the same cell, undisturbed, meanwhile
    calm = subprocess.Popen(calm_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cmd = _cmd(tmp_path, "retry", "[0.0]", steps=4, retries=0)
    killed = _run(cmd, {**env, "CRLAB_FAULT": "kill:3"})  # the attempt dies as step 3 begins
    assert killed.returncode == 1, killed.stderr[-3000:]
    out = killed.stdout.replace("\n", " ")
    assert "killed by signal 9" in out and "rerun this sweep with --retry-failed" in out
    done = _run([*cmd, "--retry-failed"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert calm.wait(timeout=600) == 0, calm.stderr.read()[-3000:]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        runs = {r.sweep_id: r for r in reg.list_runs()}
        retried, undisturbed = runs[reg.get_sweep("retry").id], runs[reg.get_sweep("calm").id]
        assert (retried.status, retried.attempt) == ("completed", 2)  # max_retries + 1, then one more
        (resume,) = reg.events(retried.id, kind="resume")
        assert resume.payload == {"from_step": 2, "attempt": 2}  # from its newest checkpoint
        ours, theirs = _steps(reg, retried.id), _steps(reg, undisturbed.id)
        assert {s for _, s in ours} == {1, 2, 3, 4} and ours == theirs

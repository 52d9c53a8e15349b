"""The Slurm executor on a real one-node cluster (`.ci/slurm.sh` starts it; CRLAB_TEST_SLURM_PARTITION names
its partition), and its bad-input errors, which need no cluster.

The requeue test runs a 2-cell sweep through sbatch whose cells train identically (they differ only in how
many checkpoints they keep); one job is requeued with `scontrol requeue` after its run has saved a
checkpoint; its run resumes from that checkpoint and ends with weights bitwise equal to the other cell's.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = (
    "{grpo.max_steps: 8, checkpoint.every: 2, data.rl_source: 'tiny:16', grpo.prompts_per_step: 2, "
    "grpo.mini_batch_size: 1, grpo.group_size: 4, reward.sandbox_workers: 1, "
    "phases.0.max_response_length: 48, phases.1.max_response_length: 64, grpo.max_refill_rounds: 1}"
)


def _spec(tmp_path: Path, executor: str) -> Path:
    spec = tmp_path / "slurm.yaml"
    spec.write_text(
        f"name: slurm-two\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  checkpoint.keep: [2, 3]\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\nexecutor: {executor}\n"
    )
    return spec


def _sweep_cmd(spec: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crlab", "sweep", str(spec), f"overrides={SMALL}", *extra]


def test_no_sbatch_is_a_clear_error_and_registers_nothing(tmp_path: Path, child_env: dict[str, str]) -> None:
    spec = _spec(tmp_path, "{kind: slurm}")
    bin_dir = tmp_path / "bin"  # PATH without sbatch
    bin_dir.mkdir()
    db = tmp_path / "reg.db"
    env = {**child_env, "PATH": str(bin_dir), "CRLAB_DB_URL": f"sqlite:///{db}"}
    res = subprocess.run(_sweep_cmd(spec), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "sbatch" in res.stderr and "Traceback" not in res.stderr
    assert not db.exists()  # nothing registered, not even an empty database


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs sbatch to reach the parameter check")
def test_an_unknown_submitit_parameter_is_a_clear_error(tmp_path: Path, child_env: dict[str, str]) -> None:
    spec = _spec(tmp_path, "{kind: slurm, slurm: {slurm_partitoin: gpu}}")
    db = tmp_path / "reg.db"
    env = {**child_env, "CRLAB_DB_URL": f"sqlite:///{db}"}
    res = subprocess.run(_sweep_cmd(spec), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "partitoin" in res.stderr and "Traceback" not in res.stderr
    assert not db.exists()


def _wait(what: str, predicate, timeout: float, proc: subprocess.Popen | None = None):  # noqa: ANN001, ANN202
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (code {proc.returncode}) while waiting for {what}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.slow
def test_a_requeued_job_resumes_to_the_same_weights(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str], slurm_partition: str, final_weights
) -> None:
    partition = slurm_partition
    spec = _spec(tmp_path, f"{{kind: slurm, slurm: {{slurm_partition: {partition}, cpus_per_task: 1}}}}")
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline"}
    sweep = subprocess.Popen(_sweep_cmd(spec, "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        with Registry(url) as reg:
            victim = _wait(
                "a run with a job id and a checkpoint",
                lambda: next((r for r in reg.list_runs() if r.job_id and r.status == "running"
                              and reg.checkpoints(r.id, complete_only=True)), None),
                timeout=600, proc=sweep,
            )  # fmt: skip
            subprocess.run(["scontrol", "requeue", victim.job_id], check=True)
            _wait("the requeued job to be pending", lambda: _job_state(victim.job_id) == "PENDING", timeout=180)
            # Slurm holds a requeued job back for about two minutes; let it start now.
            subprocess.run(["scontrol", "update", f"JobId={victim.job_id}", "StartTime=now"], check=True)
        out, err = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.send_signal(signal.SIGTERM)
            sweep.wait(timeout=60)
    assert sweep.returncode == 0, err[-3000:]
    with Registry(url) as reg:
        runs = {r.id: r for r in reg.list_runs()}
        assert {r.status for r in runs.values()} == {"completed"}
        resumed = runs[victim.id]
        assert resumed.attempt == 2 and resumed.job_id == victim.job_id  # same job, run a second time
        (event,) = reg.events(victim.id, kind="resume")
        assert event.payload["from_step"] >= 2  # continued from its checkpoint, not from scratch
        (other,) = [r for r in runs.values() if r.id != victim.id]
        assert other.attempt == 1
        ours, theirs = final_weights(reg, resumed.id), final_weights(reg, other.id)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

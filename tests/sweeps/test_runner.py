"""`platform sweep` end to end: two concurrent sweep processes run each cell once, and both exit 0 with every
cell completed; a rerun does nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
TINY = "{grpo.max_steps: 1, data.rl_source: 'tiny:16', grpo.prompts_per_step: 2, grpo.mini_batch_size: 1, reward.sandbox_workers: 1}"


@pytest.mark.slow
def test_two_sweep_processes_run_each_cell_once(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    spec = tmp_path / "two.yaml"
    spec.write_text(
        f"name: two-cells\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: [0.0, 0.5]\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\n"
    )
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}
    cmd = [sys.executable, "-m", "crlab", "sweep", str(spec), f"overrides={TINY}", "--json"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        # each waits for the cell the other runs: both print every cell completed (issue 22)
        assert [c["status"] for c in json.loads(out)["cells"]] == ["completed", "completed"]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        runs = reg.list_runs()
        assert len(runs) == 2 and {r.status for r in runs} == {"completed"}
        assert [r.attempt for r in runs] == [1, 1]  # each cell trained once, by one of the two processes
        assert len({r.cell_key for r in runs}) == 2
        _ablation_has_intervals(reg, "two-cells")
    again = subprocess.run([*cmd[:-1]], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def _ablation_has_intervals(reg: Registry, sweep: str) -> None:
    """The sweep's ablation from its real per-problem records (tiny-test reported, tiny-val selecting, the
    base model at step 0): every row has its interval, the non-baseline row its paired test, and a base row."""
    from crlab.registry.ablation import ablation
    from crlab.registry.ablation_stats import with_uncertainty

    result = with_uncertainty(reg, ablation(reg, sweep, "eval/pass@1"), delta=0.024)
    first, other = result.rows
    assert first.baseline and first.ci95 is not None and first.ci95[0] <= first.mean <= first.ci95[1]
    assert other.delta is not None and other.delta_ci95 is not None and other.p_holm == other.p
    assert other.significant is (other.p < 0.05) and other.gain is not None
    assert result.base is not None and result.base.n == 1 and result.base.ci95 is not None
    assert "best: the checkpoint chosen on val/ (eval.select_source), reported on eval/" in result.notes
    assert "one seed per row: the 95% CI is over problems only" in result.notes
    assert result.power["problems"] == 53 and result.power["seeds_needed"] >= 1


@pytest.mark.slow
def test_a_cell_killed_mid_sweep_resumes_from_its_checkpoint_on_rerun(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    import os
    import signal
    import time

    spec = tmp_path / "one.yaml"
    spec.write_text(
        f"name: one-cell\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: [0.2]\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\n  checkpoint.every: 2\n"
    )
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url}
    six_steps = TINY.replace("max_steps: 1", "max_steps: 6")
    cmd = [sys.executable, "-m", "crlab", "sweep", str(spec), f"overrides={six_steps}"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    first = subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)
    with Registry(url) as reg:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            runs = reg.list_runs()
            if runs and reg.checkpoints(runs[0].id, complete_only=True):
                break
            time.sleep(0.5)
        assert first.poll() is None, "the sweep ended before its cell saved a checkpoint"
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and its cell die at once, as in a machine crash
        first.wait()
        (run,) = reg.list_runs()
        assert run.status == "running"  # nobody got to say how it ended
        saved = max(c.step for c in reg.checkpoints(run.id, complete_only=True))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    with Registry(url) as reg:
        (run,) = reg.list_runs()
        assert (run.status, run.attempt) == ("completed", 2)
        (event,) = reg.events(run.id, kind="resume")
        assert event.payload["from_step"] >= saved >= 2  # from its newest checkpoint, not from scratch
        assert max(m.step for m in reg.metrics(run.id)) == 6

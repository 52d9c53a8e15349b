"""A sweep whose cells fail always ends on its own, says why, and follows along in plain lines off a terminal.

Real sweeps of the tiny coder, as `platform sweep` runs them (subprocesses, a real registry):
- a cell whose model cannot load gets exactly max_retries + 1 attempts, its error in the summary;
- two cells that fail alike before their first step stop the sweep with one line (an environment error);
- a cell that fails in step 3 is retried from its checkpoint, then left failed;
- with stdout a file, a line when each cell starts, every N steps, and when it ends.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = (
    "{data.rl_source: 'tiny:16', grpo.prompts_per_step: 2, grpo.mini_batch_size: 1, reward.sandbox_workers: 1, "
    "checkpoint.every: 2, %s}"
)


def _sweep(tmp_path: Path, env: dict[str, str], ratios: str, retries: int, extra: str, *args: str):  # noqa: ANN202
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: failing\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  data.crl_ratio: {ratios}\n"
        f"overrides:\n  paths.runs_dir: {tmp_path / 'runs'}\nexecutor: {{max_retries: {retries}}}\n"
    )
    cmd = [sys.executable, "-m", "crlab", "sweep", str(spec), f"overrides={SMALL % extra}", *args]
    with open(tmp_path / "out.txt", "w") as out:  # stdout is a file, as under nohup or Slurm
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=900)
    return done, (tmp_path / "out.txt").read_text()


@pytest.fixture
def env(tiny_cache: str, tmp_path: Path, child_env: dict[str, str]) -> dict[str, str]:
    return {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}


@pytest.fixture
def broken_model(tmp_path: Path) -> Path:
    """A model folder that looks right to the preflight (config.json is there) but does not load."""
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen3", "vocab_size": "many"')  # cut short
    return folder


@pytest.mark.slow
def test_a_cell_that_cannot_load_its_model_gets_max_retries_plus_one_attempts(
    env: dict[str, str], tmp_path: Path, broken_model: Path
) -> None:
    done, out = _sweep(tmp_path, env, "[0.0]", 2, f"model.path: {broken_model}")
    assert done.returncode == 1, done.stderr[-2000:]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
    assert (run.status, run.attempt) == ("failed", 3)  # max_retries + 1, then it is left failed
    assert run.error and "Error" in run.error
    assert f"after 3 attempt(s): {run.error}" in out.replace("\n", " ")  # the error in the sweep's summary
    assert out.count("] failed before its first step") == 3


@pytest.mark.slow
def test_two_cells_failing_alike_before_their_first_step_stop_the_sweep(
    env: dict[str, str], tmp_path: Path, broken_model: Path
) -> None:
    done, _ = _sweep(tmp_path, env, "[0.0, 0.5, 1.0]", 2, f"model.path: {broken_model}")
    assert done.returncode == 2
    (line,) = [x for x in done.stderr.strip().splitlines() if not x.startswith("warning:")]  # the 1.0 cell's
    assert "both failed before their first step" in line and "the environment" in line
    with Registry(env["CRLAB_DB_URL"]) as reg:
        runs = reg.list_runs()
    assert [(r.status, r.attempt) for r in runs] == [("failed", 1), ("failed", 1)]  # the third never started


@pytest.mark.slow
def test_a_cell_failing_in_step_3_is_retried_from_its_checkpoint_then_left_failed(
    env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "CRLAB_FAULT": "step:3"}
    done, out = _sweep(tmp_path, env, "[0.0]", 1, "grpo.max_steps: 4")
    assert done.returncode == 1, done.stderr[-2000:]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
        (resume,) = reg.events(run.id, kind="resume")
        steps = {m.step for m in reg.metrics(run.id)}
    assert (run.status, run.attempt) == ("failed", 2)
    assert "step 3" in (run.error or "") and resume.payload["from_step"] == 2 and resume.payload["attempt"] == 2
    assert steps == {0, 1, 2}  # 0: the base model's evaluation
    assert out.count("] failed after step 2") == 2 and f"after 2 attempt(s): {run.error}" in out.replace("\n", " ")


@pytest.mark.slow
def test_off_a_terminal_the_sweep_writes_a_line_per_event(env: dict[str, str], tmp_path: Path) -> None:
    done, out = _sweep(tmp_path, env, "[0.0, 0.5]", 0, "grpo.max_steps: 4", "--every", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    for ratio in ("0.0", "0.5"):
        cell = f"[data.crl_ratio={ratio} seed=0]"
        mine = [line.split(" ", 1)[1] for line in out.splitlines() if cell in line]
        assert mine[0].startswith(f"{cell} started: run ")
        assert any(line.startswith(f"{cell} step 2/4: reward/rl_mean ") for line in mine)
        assert any(line.startswith(f"{cell} step 4/4") for line in mine)
        assert any(line.startswith(f"{cell} step 2: checkpoint") for line in mine)
        assert mine[-1].startswith(f"{cell} completed at step 4: reward/rl_mean ")
    assert "critique/accuracy" in out  # the 0.5 cell reports its critiques too

"""A disk that fills during a real run, as `platform run` meets it (subprocesses, the tiny coder, a tmpfs).

The run's folder is on a tmpfs big enough for the preflight (1 GiB free). After the checkpoint of step 2
the tmpfs is shrunk to what it holds plus 4 MiB (another program filled the disk), less than a checkpoint
(about 10 MiB). The save at step 4 is refused: `platform run` exits 2 with one line on stderr, the run is
``failed`` with that line, no ``.tmp-*`` folder is left and step 2's checkpoint is complete. With the disk
enlarged again, `platform resume` completes the run from step 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crlab.registry import Registry
from crlab.train.engine.checkpoint import check_checkpoint

REPO = Path(__file__).resolve().parents[2]
MIB, GIB, PAGE = 1 << 20, 1 << 30, 4096
SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.micro_batch_size=8", "phases.0.max_response_length=48", "phases.1.max_response_length=64",
    "grpo.max_refill_rounds=1", "reward.sandbox_workers=1", "grpo.max_steps=6", "checkpoint.every=2",
    "checkpoint.keep=1",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from crlab.cli import main; main()", *args]


def _shrink_after_first_checkpoint(disk, runs: Path, proc: subprocess.Popen) -> None:  # noqa: ANN001
    """Once step 2's checkpoint is committed, leave 4 MiB free: less than the next checkpoint needs."""
    deadline = time.time() + 600
    while not list(runs.glob("*/checkpoints/step-000002")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    disk.resize((disk.used() + 4 * MIB + PAGE - 1) // PAGE * PAGE)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_one_line_and_resume_completes_it(
    small_disk, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    small_disk.resize(GIB + 64 * MIB)  # the preflight wants 1 GiB free under paths.runs_dir
    runs = small_disk.path / "runs"
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    args = _cli("run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL, f"paths.runs_dir={runs}")
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _shrink_after_first_checkpoint(small_disk, runs, proc)
            assert proc.wait(timeout=600) == 2
        finally:
            proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    printed = stderr.strip().splitlines()[-1]
    with Registry(url) as reg:
        (run,) = reg.list_runs()
    folder = Path(run.run_dir) / "checkpoints"
    message = f"checkpoint step-000004 does not fit in {folder}: needs "  # then the sizes, e.g. 10.0 MiB, 4.0 MiB free
    assert printed.startswith(f"error: {message}"), printed
    assert printed.endswith(f"(nothing written; newest checkpoint step-000002 intact); free space there, "
                            f"then `platform resume {run.id}`")  # fmt: skip
    assert (run.status, run.error) == ("failed", f"DiskFull: {printed.removeprefix('error: ')}")
    assert sorted(p.name for p in folder.iterdir()) == ["step-000002"]  # no .tmp-* left
    assert check_checkpoint(folder / "step-000002") is None
    (states,) = (folder / "step-000002").rglob("mp_rank_00_model_states.pt")
    assert torch.load(states, map_location="cpu", weights_only=False)["module"]  # it loads

    small_disk.resize(small_disk.used() + 256 * MIB)  # space freed
    resumed = subprocess.run(_cli("resume", run.id), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with Registry(url) as reg:
        run = reg.get_run(run.id)
        assert (run.status, run.attempt, run.error) == ("completed", 2, None)
        (event,) = reg.events(run.id, kind="resume")
        assert event.payload["from_step"] == 2
        assert {m.step for m in reg.metrics(run.id, keys=["reward/rl_mean"])} == set(range(1, 7))
        assert [c.step for c in reg.checkpoints(run.id, complete_only=True)] == [6]
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert os.path.isdir(folder / "step-000006")


@pytest.mark.slow
def test_a_sweep_cell_that_fills_the_disk_stops_the_sweep_instead_of_retrying(
    small_disk, tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    """Each retry would train again from the newest checkpoint and fail at the same save: the sweep stops at
    once with the cell's one line (exit 2), its attempts unspent."""
    small_disk.resize(GIB + 64 * MIB)
    runs = small_disk.path / "runs"
    spec = tmp_path / "full.yaml"
    spec.write_text(
        f"name: full\nbase: {REPO}/experiments/tiny_coder.yaml\ngrid:\n  seed: [1]\n"
        f"executor: {{max_retries: 2}}\noverrides:\n  paths.runs_dir: {runs}\n"
        + "".join(f"  {a.replace('=', ': ')}\n" for a in SMALL)
    )
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        _cli("sweep", str(spec)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _shrink_after_first_checkpoint(small_disk, runs, proc)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 2, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert "DiskFull: checkpoint step-000004 does not fit in" in line and "the sweep stops" in line
    with Registry(url) as reg:
        (run,) = reg.list_runs()
    assert (run.status, run.attempt) == ("failed", 1)

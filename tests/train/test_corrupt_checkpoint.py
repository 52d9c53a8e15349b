"""A corrupt newest checkpoint, as `platform resume` meets it (subprocesses, the tiny coder).

A run crashes as step 5 begins (CRLAB_FAULT), leaving complete checkpoints at steps 2 and 4; then step 4's
weights file is cut short (a disk or copy gone wrong). `platform resume` skips step 4 with a warning that
names it and says why, continues from step 2, saves a good step 4 in place of the bad one, and completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.registry import Registry
from crlab.train.engine.checkpoint import check_checkpoint

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.micro_batch_size=8", "phases.0.max_response_length=48", "phases.1.max_response_length=64",
    "grpo.max_refill_rounds=1", "reward.sandbox_workers=1", "grpo.max_steps=6", "checkpoint.every=2",
    "checkpoint.keep=3",
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from crlab.cli import main; main()", *args]


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline"}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    args = _cli(
        "run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL, f"paths.runs_dir={tmp_path / 'runs'}"
    )
    crashed = subprocess.run(
        args, env={**env, "CRLAB_FAULT": "step:5"}, capture_output=True, text=True, timeout=600
    )
    assert crashed.returncode == 1 and "InjectedFault" in crashed.stderr, crashed.stderr[-3000:]
    with Registry(url) as reg:
        (run,) = reg.list_runs()
    folder = Path(run.run_dir) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-000002", "step-000004"]
    (weights,) = (folder / "step-000004").rglob("mp_rank_00_model_states.pt")
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    assert "has" in (check_checkpoint(folder / "step-000004") or "")

    resumed = subprocess.run(_cli("resume", run.id), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = (
        f"skipping incomplete checkpoint {folder / 'step-000004'}: listed file ds/mp_rank_00_model_states.pt"
    )
    assert said in resumed.stderr and f"has {size // 2} bytes, the manifest says {size}" in resumed.stderr
    with Registry(url) as reg:
        run = reg.get_run(run.id)
        assert (run.status, run.attempt) == ("completed", 2)
        (event,) = reg.events(run.id, kind="resume")
        assert event.payload["from_step"] == 2
        assert {m.step for m in reg.metrics(run.id, keys=["reward/rl_mean"])} == set(range(1, 7))
    assert check_checkpoint(folder / "step-000004") is None  # saved again, in place of the bad one
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

"""A real `platform run` of one step records its provenance; `platform reproduce` of it trains the same
config through the same path and ends with bitwise-identical weights (subprocesses, the tiny coder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.micro_batch_size=8", "phases.0.max_response_length=48", "grpo.max_refill_rounds=1",
    "reward.sandbox_workers=1", "grpo.max_steps=1", "tracking.mode=disabled", "seed=5",
]  # fmt: skip


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)


def test_a_run_records_provenance_and_its_reproduction_matches_it(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str], final_weights: Callable
) -> None:
    db = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": db, "WANDB_MODE": "disabled",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))}  # fmt: skip
    res = _cli(env, "run", "experiments/tiny_coder.yaml", *SMALL, f"paths.runs_dir={tmp_path / 'runs'}")
    assert res.returncode == 0, res.stderr[-3000:]
    with Registry(db) as reg:
        (original,) = reg.list_runs()
    shown = json.loads(_cli(env, "runs", "show", original.id, "--json").stdout)
    made = shown["provenance"]
    assert set(made) == {"git", "packages", "data", "seed", "host"}
    assert (
        set(made["git"]) == {"commit", "dirty", "diff_sha256"}
        and made["git"]["commit"] == shown["git_commit"]
    )
    assert {"crlab", "torch", "transformers", "deepspeed", "wandb"} <= set(made["packages"])
    generated = {"generator": "crlab", "version": "0.1.0"}  # the tiny task's sources are generated, not files
    assert made["data"] == {
        "data.rl_source": {"source": "tiny:48", **generated},
        "eval.source": {"source": "tiny-test", **generated},  # tiny_coder.yaml evaluates during training,
        "eval.select_source": {"source": "tiny-val", **generated},  # and picks its best checkpoint on tiny-val
    }
    assert made["seed"] == 5 == shown["config"]["seed"] and made["host"] == shown["host"]

    # --force: other engineers' edits to this checkout may change the uncommitted diff between the two runs
    res = _cli(env, "reproduce", original.id, "--force")
    assert res.returncode == 0, res.stderr[-3000:]
    with Registry(db) as reg:
        (copy,) = [r for r in reg.list_runs() if r.id != original.id]
        (event,) = reg.events(copy.id, kind="reproduces")
        assert (
            copy.reproduces == original.id and copy.status == "completed" and copy.config == original.config
        )
        assert event.payload["run"] == original.id and event.payload["forced"] is True
        mine, theirs = final_weights(reg, original.id), final_weights(reg, copy.id)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "a reproduction must give the same weights"
    table = _cli(env, "runs", "show", copy.id)
    assert "reproduces" in table.stdout and original.id in table.stdout

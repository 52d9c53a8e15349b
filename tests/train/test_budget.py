"""The data budget: every cell of a ratio sweep draws the same rows (data.budget=rows, the paper's fixed
budget), refills come out of the same pass, and a 100% CRL cell runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.registry import Registry
from crlab.train.loop.setup import planned_steps

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "experiments/tiny_coder.yaml"
# 64 RL rows, 10 prompts a step: (budget, ratio) -> steps, worked out by hand
CASES = [
    ("rows", 0.0, 7), ("rows", 0.2, 7), ("rows", 0.5, 7), ("rows", 1.0, 7),  # ceil(64 / 10)
    ("rl_rows", 0.0, 7),  # ceil(64 / 10)
    ("rl_rows", 0.2, 8),  # ceil(64 / 8)
    ("rl_rows", 0.5, 13),  # ceil(64 / 5)
    ("rl_rows", 1.0, 64),  # one "RL row" a step: the old behaviour, named
]  # fmt: skip


@pytest.mark.parametrize(("budget", "ratio", "steps"), CASES)
def test_planned_steps(budget, ratio, steps):
    cfg = load_config(TINY, [f"data.budget={budget}", f"data.crl_ratio={ratio}", "grpo.max_steps=null"])
    assert planned_steps(cfg, 64, 100) == steps
    assert planned_steps(load_config(TINY, ["grpo.max_steps=3"]), 64, 100) == 3
    assert planned_steps(load_config(TINY, ["grpo.max_steps=null", "grpo.epochs=2"]), 64, 0) == 14


def platform(*args, env):
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_the_ratio_sweeps_dry_run_shows_one_budget(tmp_path):
    env = {**os.environ, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    for extra in ([], ["overrides={grpo.max_steps: null}"]):
        res = platform("sweep", "sweeps/crl_ratio.yaml", "--dry-run", "--json", *extra, env=env)
        assert res.returncode == 0, res.stderr
        plans = [c["plan"] for c in json.loads(res.stdout)["cells"]]
        assert len({p["rows"] for p in plans}) == 1 and len({p["steps"] for p in plans}) == 1
        assert [p["crl_rows"] / p["rows"] for p in plans] == [r for r in (0.0, 0.2, 0.5, 1.0) for _ in range(3)]


def run_args(tmp_path, *extra):
    return ("run", str(TINY), "grpo.max_steps=null", "data.rl_source=tiny:16", "grpo.prompts_per_step=4",
            "grpo.mini_batch_size=2", "tracking.mode=disabled", "eval.source=null", "seed=0",
            f"paths.runs_dir={tmp_path / 'runs'}", *extra)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [0.2, 1.0])
def test_one_pass_over_the_budget_refills_included(tmp_path, tiny_cache, child_env, ratio):
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    res = platform(*run_args(tmp_path, f"data.crl_ratio={ratio}"), env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
        ended = reg.events(run.id, "data_pass_complete")
        steps = max(m.step for m in reg.metrics(run.id, ["batch/kept_groups"]))
        refills = sum(m.value for m in reg.metrics(run.id, ["batch/refill_rounds"]))
    assert run.status == "completed"
    # 16 rows at 4 a step: 4 batches in all; each refill round drew one of them, so fewer update steps
    assert steps + refills == 4 or (steps + refills > 4 and ended and ended[0].payload["batches"] >= 4)
    assert bool(ended) == (steps < 4)

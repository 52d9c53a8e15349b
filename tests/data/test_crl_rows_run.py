"""`platform data build-crl` writes rows the trainer reads (data.crl_rows), end to end as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.data.sources import load_problems
from crlab.errors import ConfigError
from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def platform(*args, env):
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_built_rows_train(tmp_path, tiny_cache, child_env):
    problems = load_problems("tiny:12")
    candidates = tmp_path / "candidates.jsonl"
    rows = [{"problem_id": p.id, "solution": p.solutions[0]} for p in problems]
    rows += [{"problem_id": p.id, "solution": "print(0)\n"} for p in problems]  # wrong on every test
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    out = tmp_path / "crl_rows.jsonl"
    built = platform("data", "build-crl", "--problems", "tiny:12", "--candidates", str(candidates),
                     "--out", str(out), "--balance", "--json", env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr
    counts = json.loads(built.stdout)
    assert counts["candidates"] == 24 and counts["kept_true"] == counts["kept_false"] == 12
    trained = platform(
        "run", "experiments/tiny_coder.yaml", f"data.crl_rows={out}", "data.rl_source=tiny:12", "grpo.max_steps=2",
        "tracking.mode=disabled", "eval.source=null", f"paths.runs_dir={tmp_path / 'runs'}", env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    with Registry(env["CRLAB_DB_URL"]) as reg:
        (run,) = reg.list_runs()
        latest = reg.latest_metrics(run.id)
    assert run.status == "completed" and "reward/crl_mean" in latest
    assert run.provenance["data"]["data.crl_rows"]["sha256"]


def test_crl_rows_with_a_crl_source_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.crl_source"):
        load_config(REPO / "experiments/tiny_coder.yaml", ["data.crl_rows=x.jsonl", "data.crl_source=tiny:4"])

"""Reviewing a sweep in W&B: the ablation as a run in the sweep's group (real offline files), metrics
defined against the training step, and `platform sync` of a sweep's offline runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.registry.recording import Recording

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]


def platform(*args, env):
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def sweep_with_dirs(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry(url) as reg:
        sweep = reg.create_sweep("crl-ratio", {"grid": {"data.crl_ratio": [0.0, 0.2]}})
        for i, (ratio, value) in enumerate([(0.0, 0.25), (0.2, 0.5), (0.2, 0.75)]):
            config = {"data": {"crl_ratio": ratio}, "tracking": {"project": "crlab-test", "mode": "offline"}}
            run_dir = tmp_path / "runs" / f"r{i}"
            run = reg.create_run("tiny", config, sweep_id=sweep.id, cell_key=str(i), run_dir=str(run_dir))
            reg.start_attempt(run.id, host="h", pid=1)
            with Recording(reg, run.id) as rec:
                rec.metrics(5, {"eval/pass@1": value})
            reg.finish_run(run.id, "completed")
    return url


def test_ablation_logged_to_the_sweeps_group_and_synced(tmp_path):
    url = sweep_with_dirs(tmp_path)
    env = {**os.environ, "CRLAB_DB_URL": url, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    res = platform("ablation", "crl-ratio", "--wandb", "--plot", str(tmp_path / "p.png"), env=env)
    assert res.returncode == 0, res.stderr
    (folder,) = (tmp_path / "runs" / "ablation-crl-ratio" / "wandb").glob("offline-run-*")
    blob = b"".join(p.read_bytes() for p in folder.rglob("*.wandb"))
    for needle in (b"ablation/table", b"table-file", b"ablation/plot", b"crl-ratio", b"ablation"):
        assert needle in blob, needle
    tables = list(folder.rglob("ablation/table_*.table.json"))
    assert tables and json.loads(tables[0].read_text())["data"][1][:3] == ["0.2", "0.6250", "0.1768"]

    listed = platform("sync", "crl-ratio", "--dry-run", "--json", env=env)
    assert json.loads(listed.stdout)["offline_runs"] == [str(folder)]
    failed = platform("sync", "crl-ratio", env=env)  # no API key here: one line, exit 2, files left alone
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr
    assert "wandb sync failed: Error: No API key configured" in lines[0] and folder.exists()


TRACKER = """
import sys
from crlab.tracking import Tracker
tracker = Tracker(enabled=True, mode="offline", project="p", entity=None, tags=[], run_id="t1", name="t",
                  run_dir=sys.argv[1], config={})
tracker.log({"eval/pass@1": 0.5, "reward/rl_mean": 0.1}, step=3)
tracker.table("rollouts/samples", ["kind", "prompt", "response", "reward"], [["rl", "p", "r", 1.0]], step=3)
tracker.finish()
"""


def test_tracker_defines_metrics_against_the_training_step(tmp_path):
    from crlab.tracking import STEP_KEY

    # in its own process, as a trainer runs it (a W&B run in the test process would export WANDB_SERVICE)
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", TRACKER, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    blob = b"".join(p.read_bytes() for p in tmp_path.rglob("*.wandb"))
    assert STEP_KEY.encode() in blob and b"eval/*" in blob and b"rollouts/samples" in blob


def test_example_rows_take_rl_and_crl_groups_first_samples():
    import torch

    from crlab.train.loop.collect import example_rows
    from crlab.train.loop.step import PromptRow
    from crlab.train.rollouts.rollout import Rollouts

    rows = [PromptRow("rl", f"p{i}", f"r{i}") for i in range(5)] + [
        PromptRow("crl", "c0", "c0", label=True), PromptRow("crl", "c1", "c1", label=False)
    ]  # fmt: skip
    texts = [f"answer {i}" for i in range(14)]
    texts[10], texts[12] = "ok \\conclusion{T}", "\\conclusion{F}"  # first samples of the two CRL groups
    rollouts = Rollouts([[]] * 14, [[]] * 14, [[]] * 14, texts, [False] * 13 + [True])
    table = example_rows(rows, rollouts, torch.arange(14.0), size=2, limit=4)
    assert [r[:2] for r in table] == [["rl", "r0"], ["rl", "r1"], ["crl", "c0"], ["crl", "c1"]]
    assert table[2][3:7] == ["ok \\conclusion{T}", 10.0, True, True] and table[3][6] is False
    assert [r[0] for r in example_rows(rows[:5], rollouts, torch.zeros(14), 2, 4)] == ["rl"] * 4


def test_a_run_logs_tables_of_its_rollouts(tmp_path, tiny_cache, child_env):
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'r.db'}",
           "WANDB_MODE": "offline", "HOME": str(tmp_path)}  # fmt: skip
    res = platform(
        "run", "experiments/tiny_coder.yaml", "grpo.max_steps=2", "tracking.rollout_table_every=1",
        "eval.source=null", f"paths.runs_dir={tmp_path / 'runs'}", env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    tables = sorted((tmp_path / "runs").rglob("rollouts/samples_*.table.json"))
    assert len(tables) == 2  # one per step
    data = json.loads(tables[0].read_text())
    assert data["columns"] == [
        "kind",
        "problem",
        "prompt",
        "response",
        "reward",
        "label",
        "judged",
        "truncated",
    ]
    assert {row[0] for row in data["data"]} == {"rl", "crl"} and len(data["data"]) == 8

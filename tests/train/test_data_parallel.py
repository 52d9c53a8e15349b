"""A data-parallel cell: two ranks started by the DeepSpeed launcher (gloo on CPU), through `platform sweep`.

The sweep has two cells that train identically (they differ only in how many checkpoints they keep). The
first runs uninterrupted. The second is killed with SIGKILL, sweep and ranks at once, after its first
checkpoint; rerunning the sweep resumes it from that checkpoint with both ranks, and its final weights
equal the first cell's bitwise. Rank 0 alone writes the registry: one metric row per key and step. Both
evaluate on held-out problems every 2 steps (rank 0 alone, the other rank waiting), with the same numbers.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SPEC = """name: dp-two
base: {base}
grid:
  checkpoint.keep: [2, 3]
overrides:
  paths.runs_dir: {runs}
  grpo.max_steps: 4
  checkpoint.every: 2
  data.crl_ratio: 0.5
  data.rl_source: 'tiny:16'
  grpo.prompts_per_step: 4
  grpo.mini_batch_size: 2
  reward.sandbox_workers: 1
  eval.source: tiny-test
  eval.every: 2
  eval.max_problems: 4
executor: {{kind: local, parallel: 1, nproc_per_cell: 2}}
"""


@pytest.mark.slow
def test_two_ranks_train_resume_and_match_an_uninterrupted_run(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str], final_weights
) -> None:
    spec = tmp_path / "dp.yaml"
    spec.write_text(SPEC.format(base=REPO / "experiments/tiny_coder.yaml", runs=tmp_path / "runs"))
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url}
    cmd = [sys.executable, "-m", "crlab", "sweep", str(spec)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    first = subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)
    with Registry(url) as reg:
        deadline = time.time() + 1200
        victim = None
        while victim is None and time.time() < deadline and first.poll() is None:
            runs = [r for r in reg.list_runs() if r.status == "running"]
            if any(reg.checkpoints(r.id, complete_only=True) for r in runs) and len(reg.list_runs()) == 2:
                victim = runs[0]
            time.sleep(0.5)
        assert victim is not None, "the second cell never saved a checkpoint while the sweep ran"
        os.killpg(first.pid, signal.SIGKILL)  # the sweep, the launcher and both ranks die at once
        first.wait()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    with Registry(url) as reg:
        runs = {r.id: r for r in reg.list_runs()}
        assert {r.status for r in runs.values()} == {"completed"}
        assert runs[victim.id].attempt == 2
        (event,) = reg.events(victim.id, kind="resume")
        assert event.payload["from_step"] == 2
        (other,) = [r for r in runs.values() if r.id != victim.id]
        rows = collections.Counter((m.key, m.step) for m in reg.metrics(other.id))
        assert set(rows.values()) == {1} and max(step for _, step in rows) == 4  # rank 0 alone logs
        # DAPO's quota is global (grpo.dapo_quota): the two ranks' kept groups count together, so every step
        # keeps exactly prompts_per_step (4) groups unless its refills ran out (max_refill_rounds: 3)
        by_step = collections.defaultdict(dict)
        for m in reg.metrics(other.id, keys=["batch/kept_groups", "batch/refill_rounds"]):
            by_step[m.step][m.key] = m.value
        assert all(v["batch/kept_groups"] == 4 or v["batch/refill_rounds"] == 3 for v in by_step.values())
        assert any(v["batch/kept_groups"] == 4 for v in by_step.values())
        newest = max(reg.checkpoints(other.id, complete_only=True), key=lambda c: c.step)
        manifest = json.loads((Path(newest.path) / "COMPLETE.json").read_text())
        assert manifest["world_size"] == 2 and len(list(Path(newest.path).glob("rng_state_rank*.pt"))) == 2
        ours, theirs = final_weights(reg, victim.id), final_weights(reg, other.id)
        evals = [
            {m.step: m.value for m in reg.metrics(r, keys=["eval/pass@1"])} for r in (victim.id, other.id)
        ]
        assert sorted(evals[0]) == [2, 4] and evals[0] == evals[1]
        assert reg.best_checkpoint(victim.id).step == reg.best_checkpoint(other.id).step
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

"""Training and evaluation with ``rollout.engine=vllm`` on the real engine (subprocesses, the tiny coder).

A 3-step run on two data-parallel ranks with ZeRO-3 (one vLLM engine per rank) crashes as step 3 begins (CRLAB_FAULT), after checkpoints at steps 1 and 2; `platform resume`
restores step 2 and completes step 3. Each step logs ``rollout/logprob_diff``, the mean gap between the
log-probs vLLM reported for its samples and the trainer's recomputation: near zero only when vLLM sampled
from the trainer's weights, so the resumed step's value says that vLLM was given the restored weights
(3e-7 at each step measured; with the restore not pushed to vLLM, step 3 gave 0.021). Then `platform eval --engine vllm` on the
run's checkpoint scores it and exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crlab.registry import Registry

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "rollout.engine=vllm", "rollout.enforce_eager=true", "data.rl_source=tiny:48", "grpo.prompts_per_step=4",
    "grpo.mini_batch_size=2", "grpo.group_size=4", "grpo.dynamic_sampling=false", "grpo.micro_batch_size=8", "phases.0.max_response_length=48",
    "phases.1.max_response_length=64", "reward.sandbox_workers=1",
    "grpo.max_steps=3", "checkpoint.every=1", "checkpoint.keep=3", "eval.max_problems=4",
    # two ranks, ZeRO-3 with every parameter split (as in a 4B model): each rank's engine takes the weights
    # one gathered decoder layer at a time; the held-out evaluation runs on rank 0's engine alone
    "deepspeed.zero_stage=3", *[f"deepspeed.overrides.zero_optimization.stage3_{key}=0" for key in (
        "param_persistence_threshold", "max_live_parameters", "max_reuse_distance", "prefetch_bucket_size")],
]  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from crlab.cli import main; main()", *args]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run, crashed at step 3 and resumed to completion; the registry URL and each command's output."""
    tmp = tmp_path_factory.mktemp("vllm_run")
    url = f"sqlite:///{tmp / 'reg.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}
    env.update(CRLAB_DB_URL=url, CRLAB_HOME=str(tmp / "home"), WANDB_MODE="offline")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    args = _cli(
        "run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL, f"paths.runs_dir={tmp / 'runs'}", "--nproc", "2"
    )
    start = time.perf_counter()
    crashed = subprocess.run(args, env={**env, "CRLAB_FAULT": "step:3"}, capture_output=True, text=True, timeout=400)
    crash_s = time.perf_counter() - start
    with Registry(url) as reg:
        (run,) = reg.list_runs()
    resumed = subprocess.run(
        _cli("resume", run.id, "--nproc", "2"), env=env, capture_output=True, text=True, timeout=400
    )
    return {"url": url, "env": env, "run_id": run.id, "crashed": crashed, "crash_s": crash_s, "resumed": resumed}


def test_a_vllm_run_completes_and_resumes_sampling_from_the_restored_weights(resumed_run: dict) -> None:
    crashed, resumed = resumed_run["crashed"], resumed_run["resumed"]
    assert crashed.returncode == 1 and "InjectedFault" in crashed.stderr, crashed.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rollout.sleep_mode: vLLM has no sleep mode on this platform" in crashed.stderr
    with Registry(resumed_run["url"]) as reg:
        run = reg.get_run(resumed_run["run_id"])
        assert (run.status, run.attempt) == ("completed", 2)
        (event,) = reg.events(run.id, kind="resume")
        assert event.payload["from_step"] == 2
        gaps = {m.step: m.value for m in reg.metrics(run.id, keys=["rollout/logprob_diff"])}
        evals = {m.step: m.value for m in reg.metrics(run.id, keys=["eval/pass@1"])}
    print("rollout/logprob_diff by step:", gaps, "crashed run took", round(resumed_run["crash_s"], 1), "s")
    assert set(gaps) == {1, 2, 3} and max(gaps.values()) < 1e-3, gaps  # step 3: after the restore
    # (every step updates: without dynamic sampling no group is dropped, so each step has a log-prob pass)
    assert 3 in evals  # the last step is evaluated, with vLLM (greedy)


def test_platform_eval_with_vllm_scores_a_checkpoint_and_exits(resumed_run: dict) -> None:
    import json

    args = _cli(
        "eval", resumed_run["run_id"], "--on", "tiny-eval:8", "--engine", "vllm", "--max-new-tokens", "32",
        "--n", "2", "--json",
    )  # fmt: skip
    done = subprocess.run(args, env=resumed_run["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["checkpoint_step"] == 3 and len(report["per_problem"]) == 8
    assert all(p["n"] == 2 for p in report["per_problem"])  # greedy, n=2: the prompt sent twice

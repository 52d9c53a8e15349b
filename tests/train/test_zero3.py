"""ZeRO-3 on two ranks (gloo on CPU).

Under ZeRO-3 every forward gathers the parameters from all ranks, so the ranks must run as many forwards in
generation, in the log-prob pass and in each update (and as many backwards). Two ranks with work of
different sizes (tests/train/zero3_ranks.py) sample, compute log-probs and update as a plain copy of the
model does alone. A `platform run --nproc 2` that crashes as its second step begins (an injected fault,
after the first step's checkpoint) and is resumed with `platform resume --nproc 2` ends with the same
weights, bitwise, as an uninterrupted run.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crlab.registry import Registry

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "deepspeed.zero_stage=3", "eval.source=null", "grpo.max_steps=2", "checkpoint.every=1", "seed=5",
    "data.rl_source=tiny:16", "data.crl_ratio=0.5", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2",
    "grpo.micro_batch_size=2", "grpo.dynamic_sampling=false", "phases.0.max_response_length=32",
    "reward.sandbox_workers=1",
    # every parameter split and released after each use, as in a 4B model (zero3_ranks.EVERY_PARAMETER_SPLIT)
    *[f"deepspeed.overrides.zero_optimization.stage3_{key}=0" for key in (
        "param_persistence_threshold", "max_live_parameters", "max_reuse_distance", "prefetch_bucket_size")],
]  # fmt: skip


def _platform(*args: str) -> list[str]:
    return [sys.executable, "-m", "crlab", *args]


def _weights(registry: Registry, run_id: str) -> dict[str, torch.Tensor]:
    """The newest checkpoint's weights, put together from the two ranks' ZeRO-3 partitions."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    newest = max(registry.checkpoints(run_id, complete_only=True), key=lambda c: c.step)
    assert newest.step == 2
    return get_fp32_state_dict_from_zero_checkpoint(newest.path, tag="ds")


def test_held_out_evaluation_with_the_hf_engine_is_refused_under_zero3_on_several_ranks() -> None:
    from crlab.config import load_config
    from crlab.errors import ConfigError
    from crlab.train.loop.setup import check_world

    base = [str(REPO / "experiments/tiny_coder.yaml"), ["deepspeed.zero_stage=3", "grpo.mini_batch_size=10"]]
    with pytest.raises(ConfigError, match=r"^eval.source and eval.select_source with deepspeed.zero_stage=3 on 2 ranks and rollout"):
        check_world(load_config(*base), 2)
    check_world(load_config(*base), 1)  # one rank: nothing to wait for
    for fine in ("eval.source=null", "rollout.engine=vllm", "deepspeed.zero_stage=2"):
        check_world(load_config(base[0], [*base[1], fine]), 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ranks_with_unequal_work_stay_in_step(tmp_path: Path, child_env: dict[str, str]) -> None:
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    script = Path(__file__).with_name("zero3_ranks.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            env={**child_env, **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r), "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["synced"].shape == (4, 1) and ranks[1]["synced"].shape == (4, 8)  # 1 token vs 8
    for got in ranks:
        assert torch.equal(got["synced"], got["alone"])  # the same greedy tokens as the plain copy alone
        torch.testing.assert_close(got["old_logp"], got["by_hand_old_logp"], atol=1e-5, rtol=1e-5)
        assert got["n_micro_batches"] == 3.0 and "clip_frac" in got["stats_keys"]  # rank 1: 1 + 2 padding
        for name, weight in got["by_hand"].items():  # padding added nothing to the averaged gradient
            torch.testing.assert_close(got["weights"][name], weight, atol=1e-6, rtol=1e-5)
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in ranks[0]["weights"])


@pytest.mark.slow
def test_two_rank_zero3_resumes_bitwise(tiny_cache: str, tmp_path: Path, child_env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": url, "WANDB_MODE": "offline"}
    ids = {}
    for name, extra in (("straight", {}), ("crashed", {"CRLAB_FAULT": "step:2"})):
        cmd = _platform(
            "run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL, f"paths.runs_dir={tmp_path / name}",
            "--nproc", "2",
        )  # fmt: skip
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, timeout=600)
        assert (done.returncode == 0) == (name == "straight"), done.stderr[-3000:]
        ids[name] = re.search(r"^run (\w+): ", done.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
    again = subprocess.run(
        _platform("resume", ids["crashed"], "--nproc", "2"), env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    with Registry(url) as reg:
        crashed, straight = reg.get_run(ids["crashed"]), reg.get_run(ids["straight"])
        assert (crashed.status, crashed.attempt, straight.status) == ("completed", 2, "completed")
        (event,) = reg.events(crashed.id, kind="resume")
        assert event.payload["from_step"] == 1
        ours, theirs = _weights(reg, crashed.id), _weights(reg, straight.id)
        logged = [{m.step for m in reg.metrics(r, keys=["actor/loss"])} for r in (crashed.id, straight.id)]
    assert logged == [{1, 2}, {1, 2}]
    assert ours.keys() == theirs.keys() and len(ours) > 10
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

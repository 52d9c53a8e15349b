"""A run's result depends only on its config and seed, not on what ran in the process before its first step.

Set-up may draw from the global RNGs (python ``random``, numpy, torch): building the tiny coder when the
cache is empty does, and so may loading a model, the data, the sandbox, DeepSpeed or W&B. The trainer seeds
right before its first step, so a run whose process drew random numbers before and during set-up ends
exactly where an undisturbed one does: the same metrics at every step, bitwise-identical weights.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from crlab.config import load_config
from crlab.registry import Registry
from crlab.train.loop.run import StopFlag, register_run
from crlab.train.loop.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.rl_source=tiny:48", "grpo.prompts_per_step=4", "grpo.mini_batch_size=2", "grpo.group_size=4",
    "grpo.micro_batch_size=8", "phases.0.max_response_length=48", "phases.1.max_response_length=64",
    "grpo.max_refill_rounds=1", "reward.sandbox_workers=1", "grpo.max_steps=3", "checkpoint.every=3",
    "tracking.enabled=false", "seed=7",
]  # fmt: skip


def _disturb(salt: int) -> None:
    """Draw from every global RNG, and reseed torch's, as an in-process model build would."""
    random.random()
    np.random.rand(salt)
    torch.manual_seed(salt)
    torch.rand(salt)


def _train(tmp: Path, disturb: bool, final_weights) -> tuple[dict[int, dict], dict]:  # noqa: ANN001
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [*SMALL, f"paths.runs_dir={tmp / 'runs'}"])
    registry = Registry(f"sqlite:///{tmp / 'reg.db'}")
    if disturb:
        _disturb(11)
    trainer = Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)
    if disturb:
        _disturb(13)  # between set-up and training (where registering the run happens)
    try:
        assert trainer.train(run, resume=False, stop=StopFlag()) == "completed"
    finally:
        trainer.close()
    steps: dict[int, dict[str, float]] = {}
    for m in registry.metrics(run.id):
        if not m.key.startswith(("time/", "perf/")):  # wall-clock measurements
            steps.setdefault(m.step, {})[m.key] = m.value
    return steps, final_weights(registry, run.id)


@pytest.mark.slow
def test_disturbed_global_rngs_do_not_change_a_run(
    tiny_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final_weights
) -> None:  # noqa: ANN001
    monkeypatch.setenv("CRLAB_CACHE", tiny_cache)
    plain, plain_weights = _train(tmp_path / "plain", disturb=False, final_weights=final_weights)
    shaken, shaken_weights = _train(tmp_path / "shaken", disturb=True, final_weights=final_weights)
    assert sorted(plain) == sorted(shaken) == [0, 1, 2, 3]  # 0: the base model's evaluation
    for step in plain:
        assert plain[step].keys() == shaken[step].keys()
        for key, value in plain[step].items():
            other = shaken[step][key]
            assert value == other or (math.isnan(value) and math.isnan(other)), (step, key, value, other)
    assert plain_weights.keys() == shaken_weights.keys()
    assert all(torch.equal(plain_weights[k], shaken_weights[k]) for k in plain_weights)

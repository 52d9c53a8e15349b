"""``switch.restart=fresh``: a phase goes on as a new run from the weights it starts with.

The authors' 32k run is a new run from the 16k checkpoint: a fresh AdamW and warm-up
(:meth:`crlab.train.engine.deepspeed_engine.TrainEngine.restart`), the data loader from its start, one pass over the data,
and (had they used KL) the 16k weights as the reference. The trainer does the first three; this module
holds the pass's end and the reference, which a resumed run must find again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from crlab.data.pool import Budget
from crlab.train.engine import dist
from crlab.train.loop import setup

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig


def pass_over(cfg: ExperimentConfig, step: int, phase_start: dict[str, int] | None, sampler: Any, planned: int) -> bool:
    """The current phase's data pass is over: ``planned`` batches drawn since the sampler started
    (``data.budget=rows``), or ``planned`` steps since the phase began (``rl_rows``). Never under
    ``grpo.max_steps``, which cycles the data."""
    if cfg.grpo.max_steps:
        return False
    if cfg.data.budget == Budget.RL_ROWS:
        return step - (phase_start["step"] if phase_start else 0) >= planned
    return setup.budget_spent(cfg, sampler, planned)


def reference_path(run_dir: str, step: int) -> Path:
    return Path(run_dir) / f"reference-step-{step:06d}.pt"


def reference_from_policy(ref_model: Any, engine: Any, run_dir: str, step: int) -> None:
    """With KL (a reference model): the policy's weights now become the reference, as they would be a new
    run's; rank 0 also saves them in the run folder (written whole, then renamed), where a resumed run
    finds them. A collective call under ZeRO-3 (the weights are gathered)."""
    if ref_model is None:
        return
    weights = engine.full_parameters()
    _copy_into(ref_model, weights)
    if dist.is_main():
        path = reference_path(run_dir, step)
        partial = path.with_name(path.name + ".partial")
        torch.save(weights, partial)
        os.replace(partial, path)


def load_reference(ref_model: Any, run_dir: str, step: int) -> None:
    """A resumed run past a fresh restart at ``step`` takes that restart's reference again."""
    if ref_model is None:
        return
    path = reference_path(run_dir, step)
    if not path.is_file():
        from crlab.errors import CrlabError

        raise CrlabError(
            f"{path} is missing: the reference model of the phase that began at step {step} "
            "(switch.restart=fresh with grpo.kl_coef > 0); the run cannot resume without it"
        )
    _copy_into(ref_model, torch.load(path, map_location="cpu", weights_only=True))


@torch.no_grad()
def _copy_into(model: Any, weights: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        param.copy_(weights[name])

"""Gather one step's training groups: sample, score, and keep groups with reward spread (DAPO refill).

Each round draws the next mix batch from the sampler, so refills consume prompts exactly as a resumed
run will (the sampler's position is in the checkpoint). Metrics describe every sampled response, kept or
not; the update sees only the kept groups, at most ``prompts_per_step`` of them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from crlab.train import grpo
from crlab.train.rollout import Rollouts
from crlab.train.step import advantages_for, score


def _merge(parts: list[Rollouts]) -> Rollouts:
    out = Rollouts([], [], [], [], [])
    for part in parts:
        out.prompt_ids += part.prompt_ids
        out.response_ids += part.response_ids
        out.logprobs += part.logprobs
        out.texts += part.texts
        out.truncated += part.truncated
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def collect_groups(
    trainer: Any, phase: Any
) -> tuple[tuple[Rollouts, torch.Tensor], list[int], dict[str, float]]:
    g = trainer.cfg.grpo
    size, need = g.group_size, g.prompts_per_step
    parts: list[Rollouts] = []
    advantages: list[torch.Tensor] = []
    kept_rows: list[int] = []
    rl_rewards, crl_rewards, lengths, truncated, parsed = [], [], [], [], []
    t_rollout = t_reward = 0.0
    offset, rounds = 0, 0
    while True:
        batch = trainer.sampler.next_batch()
        rows = [trainer.rl_rows[i] for i in batch.rl] + [trainer.crl_rows[i] for i in batch.crl]
        t0 = time.time()
        rollouts = trainer.rollout.generate([r.prompt for r in rows], size, phase.max_response_length)
        t1 = time.time()
        scored = score(rows, rollouts, size, trainer.sandbox, trainer.cfg.reward)
        t_rollout, t_reward = t_rollout + t1 - t0, t_reward + time.time() - t1
        adv = advantages_for(scored, size, phase, g.norm_adv_by_std)
        keep = (
            grpo.keep_groups_with_spread(scored.rewards, size)
            if g.dynamic_sampling
            else torch.ones(len(rows), dtype=torch.bool)
        )
        groups = grpo.select_groups(keep, need - len(kept_rows) // size)
        kept_rows += (grpo.group_rows(groups, size) + offset).tolist()
        parts.append(rollouts)
        advantages.append(adv)
        offset += len(rollouts)
        crl = scored.is_crl.tolist()
        rl_rewards += [float(r) for r, c in zip(scored.rewards, crl, strict=True) if not c]
        crl_rewards += [float(r) for r, c in zip(scored.rewards, crl, strict=True) if c]
        parsed += [j is not None for j in scored.judged]
        lengths += [len(ids) for ids in rollouts.response_ids]
        truncated += rollouts.truncated
        if not g.dynamic_sampling or len(kept_rows) // size >= need or rounds >= g.max_refill_rounds:
            break
        rounds += 1
    merged = _merge(parts)
    stats = {
        "reward/rl_mean": _mean(rl_rewards),
        "reward/crl_mean": _mean(crl_rewards),
        "critique/accuracy": _mean(crl_rewards),
        "critique/parse_rate": _mean([float(p) for p in parsed]),
        "code/solved_frac": _mean([float(r >= 1.0) for r in rl_rewards]),
        "response/length_mean": _mean([float(n) for n in lengths]),
        "response/truncated_frac": _mean([float(t) for t in truncated]),
        "batch/kept_groups": float(len(kept_rows) // size),
        "batch/refill_rounds": float(rounds),
        "time/rollout_s": t_rollout,
        "time/reward_s": t_reward,
        "_tokens": float(sum(lengths)),
    }
    return (merged, torch.cat(advantages)), kept_rows, stats

"""Gather one step's training groups: sample, score, and keep groups with reward spread (DAPO refill).

Each round draws the next mix batch from the sampler, so refills consume prompts exactly as a resumed
run will (the sampler's position is in the checkpoint). Metrics describe every sampled response, kept or
not; the update sees only the kept groups, at most ``prompts_per_step`` of them.

With several data-parallel ranks every rank draws the same batch (same sampler, same state) and rolls
out its share of it; the ranks refill until the kept groups of all of them reach ``prompts_per_step`` (or
the rounds run out), and each trains on an equal share of the first ``prompts_per_step``, as verl's
dynamic sampling does (``grpo.dapo_quota: global``; ``per_rank``: each rank fills and keeps its own share,
:mod:`crlab.train.grpo.quota`). The metrics cover the responses of all ranks.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from crlab.train import grpo
from crlab.train.engine import dist
from crlab.train.grpo import quota
from crlab.train.loop.step import advantages_for, score
from crlab.train.loop.timing import timed
from crlab.train.rollouts.rollout import Rollouts


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


def _stderr(values: list[float]) -> float:
    """The standard error of the mean of ``values``: their Bessel-corrected std over sqrt(n); NaN under 2."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


class _Tally:
    """Per-step statistics over every sampled response, kept or not (a reward mean with its standard error
    over those samples: ``reward/rl_mean_se``, ``reward/crl_mean_se``)."""

    def __init__(self) -> None:
        self.rl: list[float] = []
        self.crl: list[float] = []
        self.parsed: list[float] = []
        self.lengths: list[float] = []
        self.truncated: list[float] = []
        self.timings: dict[str, float] = {}  # generate, reward: seconds over every round

    def add(self, scored: Any, rollouts: Rollouts) -> None:
        for reward, is_crl in zip(scored.rewards.tolist(), scored.is_crl.tolist(), strict=True):
            (self.crl if is_crl else self.rl).append(reward)
        self.parsed += [float(j is not None) for j in scored.judged]
        self.lengths += [float(len(ids)) for ids in rollouts.response_ids]
        self.truncated += [float(t) for t in rollouts.truncated]

    @classmethod
    def merged(cls, tallies: list[_Tally]) -> _Tally:
        out = cls()
        for t in tallies:
            out.rl, out.crl, out.parsed = out.rl + t.rl, out.crl + t.crl, out.parsed + t.parsed
            out.lengths, out.truncated = out.lengths + t.lengths, out.truncated + t.truncated
            for name, seconds in t.timings.items():  # the slowest rank sets the pace
                out.timings[name] = max(out.timings.get(name, 0.0), seconds)
        return out

    def stats(self, kept_groups: int, rounds: int) -> dict[str, float]:
        return {
            "reward/rl_mean": _mean(self.rl),
            "reward/crl_mean": _mean(self.crl),
            "reward/rl_mean_se": _stderr(self.rl),  # the plateau monitor's per-step standard errors
            "reward/crl_mean_se": _stderr(self.crl),
            "critique/accuracy": _mean(self.crl),  # a CRL reward is 1 exactly when the judgment is right
            "critique/parse_rate": _mean(self.parsed),
            "code/solved_frac": _mean([float(r >= 1.0) for r in self.rl]),
            "response/length_mean": _mean(self.lengths),
            "response/truncated_frac": _mean(self.truncated),
            "batch/kept_groups": float(kept_groups),
            "batch/refill_rounds": float(rounds),
            "time/generate_s": self.timings.get("generate", 0.0),
            "time/reward_s": self.timings.get("reward", 0.0),
            "_tokens": sum(self.lengths),
        }


TABLE_COLUMNS = ["kind", "problem", "prompt", "response", "reward", "label", "judged", "truncated"]


def example_rows(
    rows: list[Any], rollouts: Rollouts, rewards: torch.Tensor, size: int, limit: int
) -> list[list]:
    """A W&B table's rows: the first sample of up to ``limit`` groups, half RL and half CRL where both are
    there (``label``: a CRL row's truth; ``judged``: the conclusion the response reached)."""
    from crlab.rewards.critique import parse_conclusion

    rl = [i for i, r in enumerate(rows) if r.kind == "rl"]
    crl = [i for i, r in enumerate(rows) if r.kind == "crl"]
    n_crl = min(len(crl), max(limit // 2, limit - len(rl)))  # half each, or what the other kind leaves
    picked = sorted(rl[: limit - n_crl] + crl[:n_crl])
    out = []
    for i in picked:
        j, row = i * size, rows[i]
        judged = parse_conclusion(rollouts.texts[j]) if row.kind == "crl" else None
        out.append([row.kind, row.problem_id, row.prompt, rollouts.texts[j], float(rewards[j]), row.label, judged,
                    bool(rollouts.truncated[j])])  # fmt: skip
    return out


def refill_limit(grpo_cfg: Any, n_rows: int) -> int:
    """How many refill rounds a step may take: ``grpo.max_refill_rounds``, or, when it is null (the
    authors' unlimited refills), as many as keep the step's draws within one pass over its ``n_rows`` rows
    (``ceil(n_rows / prompts_per_step)`` draws in all); then the step ends with the groups it has, where the
    authors' loop would have run out of data."""
    if grpo_cfg.max_refill_rounds is not None:
        return int(grpo_cfg.max_refill_rounds)
    return max(0, math.ceil(n_rows / grpo_cfg.prompts_per_step) - 1)


def _sample_round(trainer: Any, phase: Any, tally: _Tally, first: bool) -> tuple[Rollouts, Any]:
    """One refill round on this rank: its share of the next batch, sampled and scored."""
    size = trainer.cfg.grpo.group_size
    batch = trainer.sampler.next_batch()
    rows = dist.shard([trainer.rl_rows[i] for i in batch.rl] + [trainer.crl_rows[i] for i in batch.crl])
    with timed("generate", tally.timings):
        rollouts = trainer.rollout.generate([r.prompt for r in rows], size, phase.max_response_length)
    with timed("reward", tally.timings):
        scored = score(rows, rollouts, size, trainer.sandbox, trainer.cfg.reward)
    tally.add(scored, rollouts)
    if first:  # what a table of this step's rollouts shows (the trainer logs it every N steps)
        trainer.examples = example_rows(
            rows, rollouts, scored.rewards, size, trainer.cfg.tracking.rollout_table_rows
        )
    return rollouts, scored


def collect_groups(
    trainer: Any, phase: Any
) -> tuple[tuple[Rollouts, torch.Tensor], list[int], dict[str, float]]:
    """Returns ((all sampled rollouts, their advantages), the rows of kept groups, statistics)."""
    g, world = trainer.cfg.grpo, dist.world()
    pooled = world > 1 and g.dapo_quota == "global"  # the kept groups of all ranks count together
    size, need = g.group_size, g.prompts_per_step // world  # this rank's share
    parts: list[Rollouts] = []
    advantages: list[torch.Tensor] = []
    kept: list[int] = []
    groups: list[quota.Group] = []
    tally = _Tally()
    rounds, limit = 0, refill_limit(g, len(trainer.rl_rows) + len(trainer.crl_rows))
    while True:
        rollouts, scored = _sample_round(trainer, phase, tally, rounds == 0)
        if g.dynamic_sampling:
            keep = grpo.keep_groups_with_spread(scored.rewards, size)  # (n_groups,)
        else:
            keep = torch.ones(len(rollouts) // size, dtype=torch.bool)  # (n_groups,)
        adv = advantages_for(scored, size, phase, g.norm_adv_by_std, g.single_sample_advantage)
        if pooled:
            groups += quota.groups_of(rollouts, adv, keep, size, rounds, dist.rank(), world)
            full = dist.all_reduce(float(len(groups)), "sum") >= g.prompts_per_step
        else:
            chosen = grpo.select_groups(keep, need - len(kept) // size)
            kept += (grpo.group_rows(chosen, size) + sum(len(p) for p in parts)).tolist()
            parts.append(rollouts)
            advantages.append(adv)
            full = dist.all_reduce(float(len(kept) // size >= need), "min") == 1.0  # every rank has its share
        if not g.dynamic_sampling or full or rounds >= limit:
            break
        rounds += 1
    if pooled:
        samples = quota.merge(quota.global_share(dist.all_gather(groups), g.prompts_per_step, dist.rank()))
        kept = list(range(len(samples[0])))
    else:
        samples = (_merge(parts), torch.cat(advantages))
    kept_groups = int(dist.all_reduce(len(kept) // size))
    stats = _Tally.merged(dist.all_gather(tally)).stats(kept_groups, rounds)
    return samples, kept, stats

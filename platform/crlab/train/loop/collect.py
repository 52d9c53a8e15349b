"""Gather one step's training groups: sample, score, and keep groups with reward spread (DAPO refill).

Each round draws the next mix batch from the sampler, so refills consume prompts exactly as a resumed
run will (the sampler's position is in the checkpoint). Metrics describe every sampled response, kept or
not; the update sees only the kept groups, at most ``prompts_per_step`` of them.

With several data-parallel ranks every rank draws the same batch (same sampler, same state) and rolls
out its share of it; the ranks refill until the kept groups of all of them reach ``prompts_per_step`` (or
the rounds run out), and each trains on an equal share of the first ``prompts_per_step``, as verl's
dynamic sampling does (``grpo.dapo_quota: global``; ``per_rank``: each rank fills and keeps its own share,
:mod:`crlab.train.grpo.quota`). The metrics cover the responses of all ranks.

Collection is handed what it draws from (:class:`Sources`: the sampler, the prompt rows, the rollout
engine, the scorer) and the config it reads, and returns what it made (:class:`Collected`); it holds no
reference to the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

from crlab.train import grpo
from crlab.train.engine import dist
from crlab.train.grpo import quota
from crlab.train.grpo.strategies import DapoQuota
from crlab.train.loop.step import PromptRow, RowKind, Scored, advantages_for
from crlab.train.loop.timing import timed
from crlab.train.rollouts.rollout import Rollouts

if TYPE_CHECKING:
    from crlab.config import GRPOConfig, PhaseConfig
    from crlab.data.mix import MixBatch


class Sampler(Protocol):
    """Draws the next mix batch (indices into the RL rows and the CRL rows): :class:`crlab.data.mix.MixSampler`."""

    def next_batch(self) -> MixBatch: ...


class RolloutBackend(Protocol):
    """Samples ``n`` responses to each prompt, of at most ``max_new_tokens``: HF or vLLM (:mod:`crlab.train.rollouts`)."""

    def generate(self, prompts: list[str], n: int, max_new_tokens: int) -> Rollouts: ...


class Scorer(Protocol):
    """Rewards every sample of ``rollouts`` (groups of ``group_size`` per row): :func:`crlab.train.loop.step.score`
    with the run's sandbox and reward config bound."""

    def __call__(self, rows: list[PromptRow], rollouts: Rollouts, group_size: int) -> Scored: ...


@dataclass
class Sources:
    """What a step's collection draws from: the sampler over the run's RL and CRL rows, the rollout engine
    and the scorer."""

    sampler: Sampler
    rl_rows: list[PromptRow]
    crl_rows: list[PromptRow]
    rollout: RolloutBackend
    scorer: Scorer


class Collected(NamedTuple):
    """What a step's collection made: (all sampled rollouts, their advantages), the rows of the kept groups,
    the step's statistics, and a table of its first round's samples (:func:`example_rows`)."""

    samples: tuple[Rollouts, torch.Tensor]
    kept: list[int]
    stats: dict[str, float]
    examples: list[list]


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

    def add(self, scored: Scored, rollouts: Rollouts) -> None:
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
    rows: list[PromptRow], rollouts: Rollouts, rewards: torch.Tensor, size: int, limit: int
) -> list[list]:
    """A W&B table's rows: the first sample of up to ``limit`` groups, half RL and half CRL where both are
    there (``label``: a CRL row's truth; ``judged``: the conclusion the response reached)."""
    from crlab.rewards.critique import parse_conclusion

    rl = [i for i, r in enumerate(rows) if r.kind == RowKind.RL]
    crl = [i for i, r in enumerate(rows) if r.kind == RowKind.CRL]
    n_crl = min(len(crl), max(limit // 2, limit - len(rl)))  # half each, or what the other kind leaves
    picked = sorted(rl[: limit - n_crl] + crl[:n_crl])
    out = []
    for i in picked:
        j, row = i * size, rows[i]
        judged = parse_conclusion(rollouts.texts[j]) if row.kind == RowKind.CRL else None
        out.append([row.kind, row.problem_id, row.prompt, rollouts.texts[j], float(rewards[j]), row.label, judged,
                    bool(rollouts.truncated[j])])  # fmt: skip
    return out


def refill_limit(grpo_cfg: GRPOConfig, n_rows: int) -> int:
    """How many refill rounds a step may take: ``grpo.max_refill_rounds``, or, when it is null (the
    authors' unlimited refills), as many as keep the step's draws within one pass over its ``n_rows`` rows
    (``ceil(n_rows / prompts_per_step)`` draws in all); then the step ends with the groups it has, where the
    authors' loop would have run out of data."""
    if grpo_cfg.max_refill_rounds is not None:
        return int(grpo_cfg.max_refill_rounds)
    return max(0, math.ceil(n_rows / grpo_cfg.prompts_per_step) - 1)


def _sample_round(
    src: Sources, size: int, max_new_tokens: int, tally: _Tally
) -> tuple[list[PromptRow], Rollouts, Scored]:
    """One refill round on this rank: its share of the next batch, sampled and scored."""
    batch = src.sampler.next_batch()
    rows = dist.shard([src.rl_rows[i] for i in batch.rl] + [src.crl_rows[i] for i in batch.crl])
    with timed("generate", tally.timings):
        rollouts = src.rollout.generate([r.prompt for r in rows], size, max_new_tokens)
    with timed("reward", tally.timings):
        scored = src.scorer(rows, rollouts, size)
    tally.add(scored, rollouts)
    return rows, rollouts, scored


def collect_groups(src: Sources, phase: PhaseConfig, g: GRPOConfig, table_rows: int) -> Collected:
    """Sample and score rounds of ``src`` under ``phase`` and the ``grpo`` config ``g`` until the kept groups
    fill the step (or the refills run out); ``table_rows``: the first round's groups in the examples table
    (``tracking.rollout_table_rows``)."""
    world = dist.world()
    pooled = world > 1 and g.dapo_quota == DapoQuota.GLOBAL  # the kept groups of all ranks count together
    size, need = g.group_size, g.prompts_per_step // world  # this rank's share
    parts: list[Rollouts] = []
    advantages: list[torch.Tensor] = []
    kept: list[int] = []
    groups: list[quota.Group] = []
    tally = _Tally()
    rounds, limit = 0, refill_limit(g, len(src.rl_rows) + len(src.crl_rows))
    examples: list[list] = []
    while True:
        rows, rollouts, scored = _sample_round(src, size, phase.max_response_length, tally)
        if rounds == 0:  # what a table of this step's rollouts shows (the trainer logs it every N steps)
            examples = example_rows(rows, rollouts, scored.rewards, size, table_rows)
        if g.dynamic_sampling:
            keep = grpo.keep_groups_with_spread(scored.rewards, size)  # (n_groups,)
        else:
            keep = torch.ones(len(rollouts) // size, dtype=torch.bool)  # (n_groups,)
        adv = advantages_for(scored, size, phase, g.norm_adv_by_std, g.single_sample_advantage, g.adv_estimator)
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
    return Collected(samples, kept, stats, examples)

"""DAPO's quota of kept groups over data-parallel ranks (``grpo.dapo_quota``).

``global`` (verl's dynamic sampling, the default): the ranks sample their shares of each batch as before,
but the step stops refilling when the groups with reward spread *of all ranks together* reach
``prompts_per_step``. The kept groups are then put in the order of the batches they came from (batch by
batch, each in the sampler's prompt order, where rank r held prompts r, r + world, ...), the first
``prompts_per_step`` are kept (fewer when the refills ran out: as many as split evenly over the ranks) and
rank r trains on the r-th contiguous share, as verl's driver cuts its batch into equal chunks per rank.
Every rank then holds the same number of groups, so no update is lost to an uneven split.

``per_rank``: each rank fills its own share (``prompts_per_step / world``) and drops its surplus; a step
ends when every rank has its share. With 40-60% of groups kept, about 0.8x as many updates per pass at 8
ranks as verl makes; kept for comparison with runs made before the global quota.

With one rank both are the same: the first ``prompts_per_step`` groups with spread, in sampling order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crlab.train.rollouts.rollout import Rollouts


@dataclass
class Group:
    """One kept group on its rank: where it came from (refill round, index in the global batch), its
    ``group_size`` samples and their advantages."""

    order: tuple[int, int]
    rollouts: Rollouts
    advantages: torch.Tensor  # (group_size,)


def groups_of(
    rollouts: Rollouts, advantages: torch.Tensor, keep: torch.Tensor, size: int, round_: int, rank: int, world: int
) -> list[Group]:
    """This rank's kept groups of one round (``keep``: one flag per local group)."""
    out = []
    for i in torch.nonzero(keep).flatten().tolist():
        rows = slice(i * size, (i + 1) * size)
        part = Rollouts(
            rollouts.prompt_ids[rows], rollouts.response_ids[rows], rollouts.logprobs[rows],
            rollouts.texts[rows], rollouts.truncated[rows],
        )  # fmt: skip
        out.append(Group((round_, i * world + rank), part, advantages[rows].clone()))
    return out


def global_share(every_rank: list[list[Group]], prompts_per_step: int, rank: int) -> list[Group]:
    """This rank's share of the first ``prompts_per_step`` kept groups of all ranks, in sampling order."""
    world = len(every_rank)
    ordered = sorted((g for groups in every_rank for g in groups), key=lambda g: g.order)
    total = min(len(ordered), prompts_per_step) // world * world  # the same count on every rank
    share = total // world
    return ordered[rank * share : (rank + 1) * share]


def merge(groups: list[Group]) -> tuple[Rollouts, torch.Tensor]:
    """The groups' samples as one Rollouts (groups contiguous) and their advantages."""
    out = Rollouts([], [], [], [], [])
    for g in groups:
        out.prompt_ids += g.rollouts.prompt_ids
        out.response_ids += g.rollouts.response_ids
        out.logprobs += g.rollouts.logprobs
        out.texts += g.rollouts.texts
        out.truncated += g.rollouts.truncated
    advantages = torch.cat([g.advantages for g in groups]) if groups else torch.zeros(0)
    return out, advantages


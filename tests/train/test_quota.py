"""DAPO's global quota over ranks (:mod:`crlab.train.grpo.quota`), worked out by hand: the kept groups of all ranks
in sampling order, the first ``prompts_per_step``, an equal contiguous share per rank."""

from __future__ import annotations

import torch

from crlab.train.grpo.quota import global_share, groups_of, merge
from crlab.train.rollouts.rollout import Rollouts


def _rollouts(tag: str, n_groups: int, size: int) -> Rollouts:
    texts = [f"{tag}{i // size}.{i % size}" for i in range(n_groups * size)]
    return Rollouts([[i] for i in range(len(texts))], [[i] for i in range(len(texts))],
                    [[0.0]] * len(texts), texts, [False] * len(texts))  # fmt: skip


def test_global_share_takes_the_first_groups_of_all_ranks_in_sampling_order() -> None:
    # a batch of 6 prompts over 2 ranks: rank 0 holds prompts 0, 2, 4; rank 1 holds 1, 3, 5 (dist.shard)
    # round 0 keeps rank 0's local groups 0 and 2 (prompts 0, 4) and rank 1's group 1 (prompt 3);
    # round 1 keeps rank 0's group 1 (prompt 2 of that batch) and rank 1's 0 and 2 (prompts 1, 5)
    size = 2
    keep = {(0, 0): [1, 0, 1], (0, 1): [0, 1, 0], (1, 0): [0, 1, 0], (1, 1): [1, 0, 1]}  # (round, rank)
    ranks: list[list] = [[], []]
    for (round_, rank), flags in keep.items():
        roll = _rollouts(f"r{round_}k{rank}g", 3, size)
        adv = torch.arange(6, dtype=torch.float32) + 10 * rank + 100 * round_
        ranks[rank] += groups_of(roll, adv, torch.tensor(flags, dtype=torch.bool), size, round_, rank, 2)
    # in order: round 0 prompts 0 (r0 g0), 3 (r1 g1), 4 (r0 g2); round 1 prompts 1 (r1 g0), 2 (r0 g1), 5 (r1 g2)
    order = [g.order for g in sorted((g for r in ranks for g in r), key=lambda g: g.order)]
    assert order == [(0, 0), (0, 3), (0, 4), (1, 1), (1, 2), (1, 5)]
    first = [merge(global_share(ranks, 4, rank))[0].texts[::size] for rank in (0, 1)]
    assert first == [["r0k0g0.0", "r0k1g1.0"], ["r0k0g2.0", "r1k1g0.0"]]  # 4 groups: 2 + 2
    rollouts, adv = merge(global_share(ranks, 4, 1))
    assert adv.tolist() == [4.0, 5.0, 110.0, 111.0] and len(rollouts) == 4
    # refills ran out with 3 groups: as many as split evenly, 1 per rank
    short = [g[:1] for g in ranks]  # rank 0: prompt 0 of round 0; rank 1: prompt 3 of round 0
    assert [len(global_share(short, 4, r)) for r in (0, 1)] == [1, 1]
    three = [ranks[0][:2], ranks[1][:1]]  # prompts 0, 4 (rank 0) and 3 (rank 1): 3 groups, 1 each
    assert [merge(global_share(three, 4, r))[0].texts[0] for r in (0, 1)] == ["r0k0g0.0", "r0k1g1.0"]


def test_one_rank_keeps_the_first_groups_as_before() -> None:
    roll = _rollouts("g", 4, 3)
    groups = groups_of(roll, torch.zeros(12), torch.tensor([True, False, True, True]), 3, 0, 0, 1)
    texts = merge(global_share([groups], 2, 0))[0].texts
    assert texts == ["g0.0", "g0.1", "g0.2", "g2.0", "g2.1", "g2.2"]

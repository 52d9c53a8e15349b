"""One GRPO step's pieces between the rollout and the optimizer: rewards, advantages, tensors, the loss.

The trainer (trainer.py) calls these in order: :func:`score` the samples, :func:`advantages_for` them
(the CRL scale applied where the phase says), keep the groups with reward spread (dynamic sampling), then
:func:`pack` the kept samples into padded tensors, split them into mini-batches (one optimizer update
each) and micro-batches of rows of similar length (:func:`micro_batches`, one forward/backward each; with
``grpo.micro_batch_tokens``, by a token budget as verl does: :mod:`crlab.train.grpo.token_batches`),
:func:`fill_logprobs` over those micro-batches, and :func:`micro_loss` gives each micro-batch its share of
the mini-batch's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import torch

from crlab.rewards.code import score_code_responses
from crlab.rewards.critique import critique_reward, parse_conclusion
from crlab.train import grpo
from crlab.train.engine import dist
from crlab.train.grpo.logprobs import model_logprobs
from crlab.train.grpo.strategies import (
    AdvEstimator,
    LossAgg,
    MicroWeight,
    SingleSample,
    estimate_advantages,
    weighs_by_tokens,
)
from crlab.train.grpo.token_batches import check_longest, micro_batch_count, token_micro_batches
from crlab.train.rollouts.rollout import Rollouts

if TYPE_CHECKING:
    from crlab.config import GRPOConfig, PhaseConfig, RewardConfig


class RowKind(StrEnum):
    """What a step's prompt asks for: code (rewarded by its tests) or a critique (by its label)."""

    RL = "rl"
    CRL = "crl"


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a step: an RL row (``spec`` holds its tests) or a CRL row (``label`` its truth)."""

    kind: RowKind
    prompt: str
    problem_id: str
    spec: Any = None
    label: bool | None = None


@dataclass
class Scored:
    rewards: torch.Tensor  # (N,) raw rewards, before any CRL scale
    is_crl: torch.Tensor  # (N,) bool
    judged: list[bool | None] = field(default_factory=list)  # CRL samples: the parsed conclusion


def score(
    rows: list[PromptRow], rollouts: Rollouts, group_size: int, sandbox: Any, reward_cfg: RewardConfig
) -> Scored:
    """Reward every sample: RL samples by running their code, CRL samples by their judgment (code
    extraction and conclusion parsing by ``reward.code_extraction`` and ``reward.conclusion_parse``)."""
    extraction = reward_cfg.code_extraction
    rule = reward_cfg.conclusion_parse
    n = len(rollouts)
    rewards = torch.zeros(n)
    is_crl = torch.tensor([rows[i // group_size].kind == RowKind.CRL for i in range(n)])
    rl_idx = [i for i in range(n) if not is_crl[i]]
    if rl_idx:
        specs = [rows[i // group_size].spec for i in rl_idx]
        texts = [rollouts.texts[i] for i in rl_idx]
        values = score_code_responses(
            sandbox, texts, specs, reward_cfg.max_tests, reward_cfg.code_mode, extraction
        )
        rewards[rl_idx] = torch.tensor(values, dtype=torch.float32)
    judged: list[bool | None] = []
    for i in range(n):
        if is_crl[i]:
            label = bool(rows[i // group_size].label)
            rewards[i] = critique_reward(rollouts.texts[i], label, rule)
            judged.append(parse_conclusion(rollouts.texts[i], rule))
    return Scored(rewards, is_crl, judged)


def advantages_for(
    scored: Scored, group_size: int, phase: PhaseConfig, norm_by_std: bool, single_sample: str = SingleSample.ZERO,
    estimator: str = AdvEstimator.GRPO,
) -> torch.Tensor:  # fmt: skip
    """Advantages by the ``estimator`` registered under that name (``grpo.adv_estimator``), with the
    phase's CRL reward scale applied on the rewards or on the advantages; ``norm_by_std``
    (``grpo.norm_adv_by_std``) and ``single_sample`` (a group of one's rule, ``grpo.single_sample_advantage``)
    are passed to it."""
    rewards = scored.rewards
    if phase.scale_on == "rewards":
        rewards = torch.where(scored.is_crl, rewards * phase.crl_reward_scale, rewards)
    adv = estimate_advantages(estimator, rewards, group_size, norm_by_std, single_sample)
    if phase.scale_on == "advantages":
        adv = grpo.scale_advantages(adv, scored.is_crl, phase.crl_reward_scale)
    return adv


@dataclass
class Packed:
    """Kept samples as right-padded tensors; position t of ``targets`` is predicted by position t."""

    input_ids: torch.Tensor  # (B, L)
    attention: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B, L-1) the next token at each position
    mask: torch.Tensor  # (B, L-1) 1 where the target is a response token
    advantages: torch.Tensor  # (B,)
    old_logp: torch.Tensor | None = None  # (B, L-1), filled by the loop before the update
    ref_logp: torch.Tensor | None = None  # (B, L-1), when a KL term is used

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def lengths(self) -> list[int]:
        """Each row's length (prompt and response) in tokens."""
        return [int(n) for n in self.attention.sum(-1).tolist()]

    def trimmed(self) -> Packed:
        """The same rows without the padding columns they all have (the rows are right-padded)."""
        width = max(self.lengths())

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[:, : width - 1]

        return Packed(
            self.input_ids[:, :width], self.attention[:, :width], self.targets[:, : width - 1],
            self.mask[:, : width - 1], self.advantages, cut(self.old_logp), cut(self.ref_logp),
        )  # fmt: skip

    def select(self, rows: slice | list[int]) -> Packed:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows]

        return Packed(
            self.input_ids[rows], self.attention[rows], self.targets[rows], self.mask[rows],
            self.advantages[rows], pick(self.old_logp), pick(self.ref_logp),
        )  # fmt: skip


def pack(
    rollouts: Rollouts, rows: list[int], advantages: torch.Tensor, pad_id: int, train_eos: bool = True
) -> Packed:
    """The kept ``rows`` as padded tensors. The loss mask covers each response token; with
    ``train_eos=False`` (``grpo.train_eos``) not the end-of-sequence token that closes an untruncated
    response: the authors' rollout re-tokenizes the response text, which has none, so theirs never trains it."""
    seqs = [rollouts.prompt_ids[i] + rollouts.response_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, L)
    attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(rows), width - 1))  # (B, L-1)
    for b, (i, seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[b, : len(seq)] = torch.tensor(seq)
        attention[b, : len(seq)] = 1
        start = len(rollouts.prompt_ids[i]) - 1  # the position that predicts the first response token
        end = len(seq) - 1 - int(not train_eos and not rollouts.truncated[i])  # the EOS predicted at end
        mask[b, start:end] = 1.0
    return Packed(input_ids, attention, input_ids[:, 1:], mask, advantages[rows])


def sequence_logprobs(
    model: Any, batch: Packed, temperature: float, *, entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the targets (B, L-1), entropies (B, L-1)) under ``model`` at the sampling temperature,
    at the response positions (``batch.mask``; 0 elsewhere). The LM head runs chunk by chunk over the
    tokens (:mod:`crlab.train.grpo.logprobs`): the full-vocabulary logits never exist. The entropy is computed
    only with ``entropy`` (zeros without), and differentiated only with ``entropy_grad``."""
    device = next(model.parameters()).device
    return model_logprobs(
        model, batch.input_ids.to(device), batch.attention.to(device), batch.targets.to(device),
        batch.mask.to(device), temperature, entropy=entropy, entropy_grad=entropy_grad,
    )  # fmt: skip


# What one forward costs beyond its tokens, in padded tokens (the tiny coder on CPU: a forward and backward
# of 20 rows is about 15 ms of fixed cost, about 0.1 ms per padded token).
FORWARD_COST_TOKENS = 128


def micro_batches(lengths: list[int], rows: range, max_rows: int) -> list[list[int]]:
    """``rows`` (one mini-batch) split into micro-batches of at most ``max_rows``, longest rows first.

    Each micro-batch is padded to its longest row only (:meth:`Packed.trimmed`), so rows of similar length
    go together: over the rows sorted by length, the split minimises the padded tokens plus
    ``FORWARD_COST_TOKENS`` per micro-batch (exactly, by dynamic programming). The loss and its gradient
    do not depend on the split (:func:`micro_weights`); only float rounding does, and the split depends
    only on the lengths, so a run stays deterministic.
    """
    order = sorted(rows, key=lambda i: (-lengths[i], i))
    n = len(order)
    best, cut = [0.0] * (n + 1), [n] * (n + 1)  # best[i]: the cost of order[i:], cut[i]: its first split
    for i in range(n - 1, -1, -1):
        best[i] = float("inf")
        for j in range(i + 1, min(n, i + max_rows) + 1):  # order[i:j] in one micro-batch
            cost = (j - i) * lengths[order[i]] + FORWARD_COST_TOKENS + best[j]
            if cost <= best[i]:  # on a tie, the larger first micro-batch
                best[i], cut[i] = cost, j
    chunks, i = [], 0
    while i < n:
        chunks.append(order[i : cut[i]])
        i = cut[i]
    return chunks


def split_mini_batches(lengths: list[int], bounds: list[int], grpo_cfg: GRPOConfig) -> list[list[list[int]]]:
    """Each mini-batch (rows ``bounds[i]:bounds[i + 1]``) split into micro-batches: of at most
    ``grpo.micro_batch_size`` rows of similar length (:func:`micro_batches`), or with
    ``grpo.micro_batch_tokens`` as verl's ``use_dynamic_bsz`` splits it (:mod:`crlab.train.grpo.token_batches`):
    as many as its tokens need, the most over the data-parallel ranks, balanced by Karmarkar–Karp."""
    spans = [range(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    budget = grpo_cfg.micro_batch_tokens
    if budget is None:
        return [micro_batches(lengths, rows, grpo_cfg.micro_batch_size) for rows in spans]
    check_longest(int(dist.all_reduce(max(lengths), "max")), budget)  # on every rank alike
    counts = [micro_batch_count([lengths[i] for i in rows], budget) for rows in spans]
    counts = [int(dist.all_reduce(c, "max")) for c in counts]  # as verl: the most over the ranks
    return [token_micro_batches(lengths, rows, c) for rows, c in zip(spans, counts, strict=True)]


@torch.no_grad()
def fill_logprobs(
    model: Any, packed: Packed, temperature: float, chunks: list[list[int]], ref: Any = None,
    forwards: int = 0, on_policy: bool = False,
) -> None:  # fmt: skip
    """Compute the pre-update policy's log-probs (``old_logp``) and, with ``ref``, the reference's, one
    forward per chunk of rows (the update's micro-batches, so that its first forward sees the same tensors);
    zero past each chunk's longest row and outside the response tokens.

    ``forwards`` > ``len(chunks)``: as many policy forwards in all, the extra ones on this rank's shortest
    row, their results dropped (ZeRO-3 gathers the parameters in every forward, a collective call: every
    rank must make the same number of them).

    ``on_policy`` (one update this step, no reference model): no pass at all. The policy has not moved
    since it sampled, so the old log-probs are the update's own, detached (:func:`micro_loss`): the ratio is
    exactly 1 and the gradient is that of the separate pass, without its forward."""
    if on_policy and ref is None:
        packed.old_logp, packed.ref_logp = None, None
        return
    olds = torch.zeros_like(packed.mask)  # (B, L-1)
    refs = torch.zeros_like(packed.mask) if ref is not None else None  # (B, L-1)
    for rows in chunks:
        part = packed.select(rows).trimmed()
        width = part.mask.shape[1]
        olds[rows, :width] = sequence_logprobs(model, part, temperature)[0].cpu()
        if refs is not None:
            refs[rows, :width] = sequence_logprobs(ref, part, temperature)[0].cpu()
    for _ in range(forwards - len(chunks)):
        sequence_logprobs(model, padding_batch(packed, chunks), temperature)
    packed.old_logp, packed.ref_logp = olds, refs


def padding_batch(packed: Packed, chunks: list[list[int]]) -> Packed:
    """A micro-batch that only keeps a collective count: this rank's shortest row of ``chunks`` (the first
    of the shortest, in the chunks' order), trimmed."""
    rows = [row for chunk in chunks for row in chunk]
    lengths = packed.attention[rows].sum(-1).tolist()
    return packed.select([rows[lengths.index(min(lengths))]]).trimmed()


def micro_loss(
    model: Any, mb: Packed, *, weight: float, grpo_cfg: GRPOConfig, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """The micro-batch's loss, weighted by its share of the mini-batch (tokens or sequences)."""
    device = next(model.parameters()).device
    bonus = grpo_cfg.entropy_coef > 0
    logp, ent = sequence_logprobs(model, mb, temperature, entropy=True, entropy_grad=bonus)  # (B, T) each
    mask = mb.mask.to(device)
    old = logp.detach() if mb.old_logp is None else mb.old_logp.to(device)  # None: on-policy (fill_logprobs)
    loss, stats = grpo.policy_loss(
        logp,
        old,
        mb.advantages.to(device),
        mask,
        grpo_cfg.clip_low,
        grpo_cfg.clip_high,
        grpo_cfg.loss_agg,
        dual_clip_c=grpo_cfg.dual_clip_c,
    )
    out = {k: float(v) for k, v in stats.items()}
    if grpo_cfg.kl_coef > 0 and mb.ref_logp is not None:
        kl = grpo.aggregate(grpo.kl_penalty(logp, mb.ref_logp.to(device), mask), mask, grpo_cfg.loss_agg)
        loss = loss + grpo_cfg.kl_coef * kl
        out["kl"] = float(kl.detach())
    entropy = grpo.aggregate(ent, mask, LossAgg.TOKEN_MEAN)
    if bonus:
        loss = loss - grpo_cfg.entropy_coef * entropy
    out["entropy"] = float(entropy.detach())
    return loss * weight, out


def micro_weights(
    packed: Packed, chunks: list[list[int]], agg: str, how: str = MicroWeight.EXACT
) -> list[tuple[Packed, float]]:
    """The micro-batches of one mini-batch (``chunks`` of rows, see :func:`micro_batches`), each trimmed to
    its longest row, with its share of the mini-batch's normaliser (tokens for token-mean and any aggregation
registered ``by_tokens``, else rows), so
    the update is the mini-batch's own loss (``how="exact"``). ``how="verl"`` (``grpo.micro_weight``):
    always its share of the rows, as verl's dp_actor scales each micro-batch's loss (its own token mean
    under token-mean) by n_seq(micro) / n_seq(mini-batch); the token mean then depends on the split."""
    parts = [packed.select(rows).trimmed() for rows in chunks]
    by_tokens = weighs_by_tokens(agg) and how == MicroWeight.EXACT
    shares = [float(p.mask.sum()) if by_tokens else float(len(p)) for p in parts]
    total = sum(shares)
    return [(part, share / max(total, 1.0)) for part, share in zip(parts, shares, strict=True)]


def pad_micro_weights(
    parts: list[tuple[Packed, float]], count: int, packed: Packed, chunks: list[list[int]]
) -> list[tuple[Packed, float] | tuple[Packed, float, bool]]:
    """``parts`` (:func:`micro_weights`) followed by padding micro-batches up to ``count``: each is
    :func:`padding_batch` with weight 0 and a third field marking it (:func:`update_loss` drops its stats).
    Under ZeRO-2 and 3 every backward reduces gradients across the ranks (and under ZeRO-3 every forward
    gathers parameters), so every rank must run as many micro-batches in an update; a padding one adds
    exactly zero to the gradient."""
    pad = (padding_batch(packed, chunks), 0.0, True)
    return [*parts, *[pad] * (count - len(parts))]


def update_loss(
    model: Any, item: tuple[Packed, float] | tuple[Packed, float, bool], grpo_cfg: GRPOConfig, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`micro_loss` of a ``(micro-batch, weight)`` item; a padding item's stats are left out."""
    part, weight, *padding = item
    loss, stats = micro_loss(model, part, weight=weight, grpo_cfg=grpo_cfg, temperature=temperature)
    return loss, ({} if padding else stats)


def rollout_logprob_gap(rollouts: Rollouts, rows: list[int], packed: Packed) -> tuple[float, float]:
    """(sum, count) over the response tokens in the loss of |the sampler's log-prob - the trainer's
    recomputed pre-update log-prob| (``packed.old_logp``; row ``b`` of ``packed`` is sample ``rows[b]``).
    Near 0 when the rollout engine samples from the trainer's weights at the same temperature; top-k and
    top-p renormalise the sampler's distribution, which the trainer's log-probs leave out."""
    total, count = 0.0, 0
    for b, i in enumerate(rows):
        start = len(rollouts.prompt_ids[i]) - 1
        n = len(rollouts.response_ids[i])
        keep = packed.mask[b, start : start + n].bool()  # (n,)
        mine = packed.old_logp[b, start : start + n]  # type: ignore[index]  # (n,)
        theirs = torch.tensor(rollouts.logprobs[i][:n], dtype=mine.dtype)  # (n,)
        total += float((mine - theirs)[keep].abs().sum())
        count += int(keep.sum())
    return total, count

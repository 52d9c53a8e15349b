"""GRPO maths as pure tensor functions: advantages, the clipped policy loss, KL, entropy, log-probs.

Nothing here reads a config object or a global; every function takes tensors and plain numbers and returns
tensors. Shapes are written in comments: ``B`` sequences, ``T`` response tokens, ``V`` vocabulary,
``G`` rollouts per prompt (the group size), ``N = n_groups * G``.

The advantage estimators and loss aggregations are chosen by name (:mod:`crlab.train.grpo.strategies`, torch-free);
:func:`group_advantages` and :func:`aggregate` come from there.

Masks are float or bool tensors with 1 on response tokens that count and 0 on padding.

On the CRL reward scale (Critique-Coder scales the critique reward by 0.8 in its first phase): with
per-group std normalisation, and groups that are all-CRL or all-RL (a group is the G rollouts of one
prompt, and a prompt is either an RL or a CRL prompt), multiplying a group's rewards by a constant ``s > 0``
multiplies its mean and its std by ``s`` too, so ``(s*r - s*mean) / (s*std) == (r - mean) / std``: the
scale cancels out exactly (up to ``eps``). A scale meant to weigh CRL less must therefore act on the
advantages (:func:`scale_advantages`), which is the platform's default, or normalisation must be off.
"""

from __future__ import annotations

import torch

from crlab.train.grpo.strategies import LOSS_AGGS, LossAgg, aggregate, group_advantages  # noqa: F401

# Log-ratios are clamped before exp() so that one wild token cannot produce inf/nan; exp(20) ~ 5e8 is far
# outside any clip range, so the clamp never changes a clipped term.
_LOG_RATIO_LIMIT = 20.0


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    agg: str = LossAgg.TOKEN_MEAN,
    dual_clip_c: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped (PPO/GRPO) surrogate loss with asymmetric clipping ("clip-higher", DAPO).

    Per token: ``max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))`` with
    ``ratio = exp(logp - old_logp)``, then reduced by :func:`aggregate` with ``agg``. With ``dual_clip_c``
    (> 1; verl's ``clip_ratio_c``, 3 by default there), tokens with a negative advantage are also bounded
    above by ``-A * c``: a token whose ratio has run far past ``1 + clip_high`` cannot push the loss up
    without limit (Ye et al. 2020, dual-clip PPO), exactly as verl's ``compute_policy_loss`` does.

    Returns ``(loss, stats)``; ``stats`` holds detached 0-d tensors over the valid tokens:
    ``clip_frac`` (share of tokens where the clipped term is the active one), ``approx_kl``
    (k3 estimate of KL(old || new): ``ratio - 1 - log ratio``, token mean), ``ratio_mean`` and, with
    dual-clip, ``dual_clip_frac`` (share of tokens the lower bound caught).
    """
    reduce = LOSS_AGGS.get(agg)
    log_ratio = (logp - old_logp).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.unsqueeze(-1).to(ratio.dtype)  # (B, 1)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    dual = None
    if dual_clip_c is not None:
        if dual_clip_c <= 1.0:
            raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
        bound = -adv * dual_clip_c  # (B, 1): for A < 0, the largest loss a token may give
        dual = (adv < 0) & (bound < per_token)  # (B, T)
        per_token = torch.where(adv < 0, torch.minimum(per_token, bound), per_token)  # (B, T)
    loss = reduce(per_token, mask.to(per_token.dtype))
    with torch.no_grad():
        stats = {
            "clip_frac": aggregate((clipped > unclipped).to(ratio.dtype), mask, LossAgg.TOKEN_MEAN),
            "approx_kl": aggregate(ratio - 1.0 - log_ratio, mask, LossAgg.TOKEN_MEAN),
            "ratio_mean": aggregate(ratio, mask, LossAgg.TOKEN_MEAN),
        }
        if dual is not None:
            stats["dual_clip_frac"] = aggregate(dual.to(ratio.dtype), mask, LossAgg.TOKEN_MEAN)
    return loss, {k: v.detach() for k, v in stats.items()}


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(ref - logp) - (ref - logp) - 1``.

    Non-negative, zero where ``logp == ref_logp``, and zero on masked tokens. Returns (B, T); reduce it
    with :func:`aggregate`.
    """
    diff = (ref_logp - logp).clamp(-_LOG_RATIO_LIMIT, _LOG_RATIO_LIMIT)  # (B, T)
    return (torch.exp(diff) - diff - 1.0) * mask.to(diff.dtype)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last axis: (B, T, V) -> (B, T).

    ``H = logsumexp(z) - sum(softmax(z) * z)``, stable for large logits.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)  # (B, T, V)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)  # (B, T)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen id: logits (B, T, V), ids (B, T) -> (B, T).

    Computed as ``logit[id] - logsumexp(logits)`` so that the full (B, T, V) log-softmax is never
    materialised; half-precision logits are upcast one sequence at a time.
    """
    ids = ids.long().unsqueeze(-1)  # (B, T, 1)
    if logits.dtype in (torch.float32, torch.float64):
        chosen = logits.gather(-1, ids).squeeze(-1)  # (B, T)
        return chosen - torch.logsumexp(logits, dim=-1)  # (B, T)
    rows = []
    for row_logits, row_ids in zip(logits, ids, strict=True):  # (T, V), (T, 1)
        row = row_logits.float()
        rows.append(row.gather(-1, row_ids).squeeze(-1) - torch.logsumexp(row, dim=-1))  # (T,)
    return torch.stack(rows)  # (B, T)


def keep_groups_with_spread(rewards: torch.Tensor, group_size: int, eps: float = 1e-8) -> torch.Tensor:
    """DAPO dynamic sampling: True for groups whose rewards are not all equal (max - min > eps).

    rewards (N,) with contiguous groups -> bool mask (n_groups,). A group whose rollouts all got the same
    reward has all-zero advantages and contributes no gradient. Groups of one are kept, as verl's DAPO
    filter keeps them (``std > 0 or len == 1``): their advantage is 0 or their raw reward, never spread.
    """
    if group_size < 1 or rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size: got length {rewards.numel()} "
            f"and group_size {group_size}"
        )
    grouped = rewards.view(-1, group_size)  # (n_groups, G)
    if group_size == 1:
        return torch.ones(grouped.shape[0], dtype=torch.bool)  # (n_groups,)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) > eps  # (n_groups,)


def select_groups(mask: torch.Tensor, need: int) -> torch.Tensor:
    """Indices (long, ascending) of the first ``need`` groups where ``mask`` (n_groups,) is True.

    Returns fewer than ``need`` indices when fewer groups are kept; the trainer then refills from the
    next prompts and calls this again on the new groups.
    """
    if need < 0:
        raise ValueError(f"need must be >= 0, got {need}")
    return torch.nonzero(mask.bool(), as_tuple=False).flatten()[:need]  # (<= need,)


def group_rows(group_indices: torch.Tensor, group_size: int) -> torch.Tensor:
    """Sample (row) indices of the given groups: (k,) group indices -> (k * G,) row indices, in order."""
    offsets = torch.arange(group_size, device=group_indices.device)  # (G,)
    return (group_indices.long().unsqueeze(-1) * group_size + offsets).reshape(-1)  # (k * G,)


def scale_advantages(advantages: torch.Tensor, is_crl: torch.Tensor, scale: float) -> torch.Tensor:
    """Multiply the advantages of CRL rows by ``scale``; RL rows are unchanged.

    advantages (N,), is_crl (N,) bool -> (N,). This is where the CRL reward scale acts by default:
    scaling the *rewards* of an all-CRL group before per-group std normalisation changes nothing,
    because the group mean and std scale with it and the ratio is unchanged (see the module docstring);
    scaling the advantages after normalisation does weigh CRL rows by ``scale`` in the loss.
    """
    return torch.where(is_crl.bool(), advantages * scale, advantages)  # (N,)

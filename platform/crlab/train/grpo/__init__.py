"""The algorithm: GRPO's maths, the phases and their switch, token budgets, log-probs, DAPO's quota.

The maths lives in :mod:`crlab.train.grpo.core`; its functions are this package's API
(``crlab.train.grpo.group_advantages``, ``crlab.train.grpo.policy_loss``). They load on first use, so that
the torch-free modules here (:mod:`~crlab.train.grpo.strategies`, :mod:`~crlab.train.grpo.phases`: the
names the config checks list) import without torch."""

from __future__ import annotations

from typing import Any

_CORE = (
    "LOSS_AGGS",
    "aggregate",
    "entropy_from_logits",
    "group_advantages",
    "group_rows",
    "keep_groups_with_spread",
    "kl_penalty",
    "policy_loss",
    "scale_advantages",
    "select_groups",
    "token_logprobs",
)
__all__ = list(_CORE)


def __getattr__(name: str) -> Any:
    if name in _CORE:
        from crlab.train.grpo import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

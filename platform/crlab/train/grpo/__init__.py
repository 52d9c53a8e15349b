"""The algorithm: GRPO's maths, the phases and their switch, token budgets, log-probs, DAPO's quota.

The maths lives in :mod:`crlab.train.grpo.core`; its functions are this package's API
(``crlab.train.grpo.group_advantages``, ``crlab.train.grpo.policy_loss``)."""

from crlab.train.grpo.core import (  # noqa: F401
    AGG_MODES,
    SINGLE_SAMPLE,
    aggregate,
    entropy_from_logits,
    group_advantages,
    group_rows,
    keep_groups_with_spread,
    kl_penalty,
    policy_loss,
    scale_advantages,
    select_groups,
    token_logprobs,
)

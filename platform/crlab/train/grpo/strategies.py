"""Strategies chosen by name: advantage estimators and loss aggregations, each one decorated function.

As verl's ``register_adv_est`` and ``register_policy_loss``: a new estimator is one function decorated with
``@register_adv_est("name")``, a new aggregation one with ``@register_loss_agg("name")``, in any module
imported before the run starts; ``grpo.adv_estimator`` and ``grpo.loss_agg`` then accept the name, and
the config checks list it among the choices (they read these registries' keys, not a copy of them). The
switch policies and plateau rules have registries of the same kind in :mod:`crlab.train.grpo.phases`.

Torch is never imported here: the built-in strategies use tensor methods only, so that the config checks
can read the names without loading torch (``crlab.train.grpo`` loads its maths lazily for the same reason).

Shapes: ``N = n_groups * G`` samples with each group's ``G`` contiguous; ``(B, T)`` sequences by tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Named strategies of one kind. ``key`` is the config key that picks one (named in errors)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """A decorator that registers its function under ``name`` (a name already taken is refused)."""

        def add(fn: F) -> F:
            if name in self._entries:
                raise ValueError(
                    f"{self.key}: {name!r} is already registered ({self._entries[name].__qualname__})"
                )
            self._entries[str(name)] = fn
            return fn

        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a strategy registered for a while, e.g. by a test)."""
        del self._entries[name]

    def get(self, name: str) -> F:
        """The strategy registered as ``name``; a ValueError listing the known names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"{self.key} must be one of {', '.join(self)}, got {name!r}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


# -- advantage estimators -------------------------------------------------------------------------------


class AdvantageEstimator(Protocol):
    def __call__(
        self, rewards: torch.Tensor, group_size: int, norm_by_std: bool = True, eps: float = 1e-6,
        single_sample: str = "zero",
    ) -> torch.Tensor: ...  # fmt: skip


ADV_ESTIMATORS: Registry[AdvantageEstimator] = Registry("grpo.adv_estimator")
register_adv_est = ADV_ESTIMATORS.register


class AdvEstimator(StrEnum):
    """The built-in estimators' names."""

    GRPO = "grpo"


class SingleSample(StrEnum):
    """What a group of one sample gets (``grpo.single_sample_advantage``)."""

    ZERO = "zero"  # advantage 0: no spread
    RAW = "raw"  # verl's compute_grpo_outcome_advantage: mean 0, std 1, so r / (1 + eps)


class MicroWeight(StrEnum):
    """How a micro-batch's loss is weighed in its mini-batch's update (``grpo.micro_weight``)."""

    EXACT = "exact"  # its share of the mini-batch's normaliser: the update is the mini-batch's own loss
    VERL = "verl"  # its share of the rows, as verl's dp_actor (the token mean then depends on the split)


class DapoQuota(StrEnum):
    """Whose kept groups fill DAPO's quota of ``prompts_per_step`` (``grpo.dapo_quota``)."""

    GLOBAL = "global"  # all ranks' together (verl's dynamic sampling)
    PER_RANK = "per_rank"  # each rank fills its own share


def _check_groups(rewards: torch.Tensor, group_size: int) -> None:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size: got shape {tuple(rewards.shape)} "
            f"(length {rewards.numel()}) and group_size {group_size}"
        )


@register_adv_est(AdvEstimator.GRPO)
def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    single_sample: str = SingleSample.ZERO,
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std (+ eps).

    ``rewards`` is 1-D, ``(N,)`` with ``N = n_groups * group_size`` and each group's samples contiguous.
    The std is the sample (Bessel-corrected, unbiased) std, as verl computes it. With
    ``norm_by_std=False`` the result is ``r - group mean``. A group of one sample has no spread:
    ``single_sample="zero"`` gives it advantage 0; ``"raw"`` is verl's ``compute_grpo_outcome_advantage``,
    which takes mean 0 and std 1 for it: ``r / (1 + eps)``, or ``r`` without std normalisation.
    """
    if single_sample not in tuple(SingleSample):
        raise ValueError(f"single_sample must be one of {', '.join(SingleSample)}, got {single_sample!r}")
    _check_groups(rewards, group_size)
    grouped = rewards.float().view(-1, group_size)  # (n_groups, G)
    if group_size == 1 and single_sample == SingleSample.RAW:
        return (grouped / (1.0 + eps) if norm_by_std else grouped).reshape(-1)  # (N,)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (n_groups, G)
    if norm_by_std:
        # (n_groups, 1); a group of one has no spread
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else grouped.new_zeros(grouped.shape)
        centred = centred / (std + eps)
    return centred.reshape(-1)  # (N,)


def estimate_advantages(
    name: str, rewards: torch.Tensor, group_size: int, norm_by_std: bool = True,
    single_sample: str = SingleSample.ZERO,
) -> torch.Tensor:  # fmt: skip
    """The advantages (N,) of ``rewards`` (N,) by the estimator registered as ``name``."""
    return ADV_ESTIMATORS.get(name)(rewards, group_size, norm_by_std=norm_by_std, single_sample=single_sample)


# -- loss aggregations ----------------------------------------------------------------------------------


class LossAggregation(Protocol):
    def __call__(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


LOSS_AGGS: Registry[LossAggregation] = Registry("grpo.loss_agg")


def register_loss_agg(name: str, *, by_tokens: bool = False) -> Callable[[F], F]:
    """Register a loss aggregation under ``name``. ``by_tokens``: it divides by the valid tokens of the
    whole batch (as ``token-mean``), so a micro-batch's share of a mini-batch's loss is its share of the
    tokens (else of the rows): see :func:`weighs_by_tokens`."""

    def add(fn: F) -> F:
        fn.by_tokens = by_tokens  # type: ignore[attr-defined]
        return LOSS_AGGS.register(name)(fn)

    return add


def weighs_by_tokens(agg: str) -> bool:
    """Whether the aggregation ``agg`` normalises by the batch's valid tokens (see :func:`register_loss_agg`)."""
    return bool(getattr(LOSS_AGGS.get(agg), "by_tokens", False))


class LossAgg(StrEnum):
    """The built-in aggregations' names."""

    TOKEN_MEAN = "token-mean"
    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"
    SEQ_MEAN_TOKEN_SUM = "seq-mean-token-sum"


@register_loss_agg(LossAgg.TOKEN_MEAN, by_tokens=True)
def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over all valid tokens / number of valid tokens (long answers weigh more)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _seq_mean(per_seq: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The mean of ``per_seq`` (B,) over the sequences with a valid token (``tokens`` (B,) > 0)."""
    present = (tokens > 0).to(per_seq.dtype)  # (B,)
    return (per_seq * present).sum() / present.sum().clamp(min=1.0)


@register_loss_agg(LossAgg.SEQ_MEAN_TOKEN_MEAN)
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's mean over its valid tokens, then the mean over sequences."""
    tokens = mask.sum(dim=-1)  # (B,)
    return _seq_mean((values * mask).sum(dim=-1) / tokens.clamp(min=1.0), tokens)


@register_loss_agg(LossAgg.SEQ_MEAN_TOKEN_SUM)
def seq_mean_token_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's sum over its valid tokens, then the mean over sequences."""
    return _seq_mean((values * mask).sum(dim=-1), mask.sum(dim=-1))


def aggregate(values: torch.Tensor, mask: torch.Tensor, agg: str = LossAgg.TOKEN_MEAN) -> torch.Tensor:
    """Reduce per-token ``values`` (B, T) under ``mask`` (B, T) to a scalar by the aggregation registered
    as ``agg`` (built in: ``token-mean``, ``seq-mean-token-mean``, ``seq-mean-token-sum``).

    Sequences without any valid token are left out of the sequence means; an all-zero mask gives 0.
    """
    return LOSS_AGGS.get(agg)(values, mask.to(values.dtype))

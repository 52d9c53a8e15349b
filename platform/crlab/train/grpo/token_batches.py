"""Micro-batches sized by a token budget (``grpo.micro_batch_tokens``), as verl's ``use_dynamic_bsz`` does.

verl 0.4.1 (``verl/utils/seqlen_balancing.py`` ``rearrange_micro_batches``, which
``workers/actor/dp_actor.py`` ``update_policy`` calls once per mini-batch with ``ppo_max_token_len_per_gpu``
times the sequence-parallel size) splits each rank's mini-batch in two moves:

1. how many micro-batches: ``min(rows, ceil(tokens / budget))``, the tokens being the rows' lengths (their
   attention-mask sums: prompt and response, no padding), then the largest such count over the
   data-parallel ranks, so every rank runs as many (:func:`micro_batch_count`; the max is taken by
   ``crlab.train.loop.step.split_mini_batches``, which calls this module);
2. which rows go together: the Karmarkar–Karp largest differencing method partitions the rows by length
   into exactly that many micro-batches of balanced token sums, any number of rows each
   (:func:`balanced_partition`).

The budget is a target, not a cap: the count comes from the total, and a balanced partition into that many
can hold more than the budget in one micro-batch (lengths 10, 10, 10 with a budget of 15: two micro-batches,
20 and 10 tokens). A single row over the budget is an error here, as it is in verl.

Where this may differ from verl:

- verl asserts the budget against the batch's padded width (``attention_mask.shape[-1]``: the configured
  maximum prompt and response lengths, to which its rollout pads), so a budget too small fails at the first
  update whatever the rows. Here the check is on each row's own length, so it fails on the first row that
  is too long; the config check warns at start when ``data.max_prompt_length`` plus a phase's
  ``max_response_length`` is over the budget.
- Ties: verl orders its partial partitions by (spread, then the largest set's token sum, row count, then its
  (index, length) items compared as lists); this module uses the same order, so with indices that are
  positions in the mini-batch the partition and its order are verl's. That order is total (no two states
  share a row), so the heap's internals never decide. Checked once against verl's
  ``get_seqlen_balanced_partitions(..., equal_size=False)`` run on 3,020 random inputs (1-512 rows, many
  ties): the same lists in the same order (a scratch script; verl is not a dependency).
- The micro-batches come out as verl returns them: the largest token sum first, each one's rows in their
  order in the mini-batch. Under ``grpo.micro_weight: exact`` neither order nor split changes the loss;
  under ``verl`` the split does (each micro-batch's own token mean), the order only float rounding.
- Where ranks hold different numbers of rows (the platform's ranks may keep different numbers of groups,
  verl's never do), the largest count over the ranks is capped at this rank's rows; the trainer pads the
  update with zero-weight micro-batches where ZeRO needs every rank to run as many.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from crlab.errors import ConfigError


def check_longest(longest: int, budget: int) -> None:
    """A row of ``longest`` tokens over ``budget`` (or a budget below 1) is a :class:`ConfigError` naming
    ``grpo.micro_batch_tokens``."""
    if budget < 1:
        raise ConfigError(f"grpo.micro_batch_tokens: {budget} is outside [1, inf]")
    if longest > budget:
        raise ConfigError(
            f"grpo.micro_batch_tokens: a row of {longest} tokens (prompt and response) is over the budget of "
            f"{budget} tokens per micro-batch; raise grpo.micro_batch_tokens to {longest} or more (verl "
            "asserts the same of ppo_max_token_len_per_gpu), or shorten data.max_prompt_length or the "
            "phase's max_response_length"
        )


def micro_batch_count(lengths: Sequence[int], budget: int) -> int:
    """``min(rows, ceil(sum(lengths) / budget))`` for one rank's mini-batch of rows of ``lengths`` tokens;
    a row over the budget is an error (:func:`check_longest`)."""
    check_longest(max(lengths, default=0), budget)
    return min(len(lengths), math.ceil(sum(lengths) / budget))


class _Part:
    """One growing micro-batch: its token sum and its (index, length) items in the order they joined."""

    __slots__ = ("total", "items")

    def __init__(self, items: list[tuple[int, int]]) -> None:
        self.items = items
        self.total = sum(length for _, length in items)

    def key(self) -> tuple[int, int, list[tuple[int, int]]]:
        return (self.total, len(self.items), self.items)


class _Partial:
    """A partition of some of the rows into ``k`` parts, kept largest part first (by :meth:`_Part.key`)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = sorted(parts, key=_Part.key, reverse=True)

    def spread(self) -> int:
        return self.parts[0].total - self.parts[-1].total

    def __lt__(self, other: _Partial) -> bool:
        """Pops first from a min-heap: the larger spread, then the larger largest part."""
        if self.spread() != other.spread():
            return self.spread() > other.spread()
        return self.parts[0].key() > other.parts[0].key()

    def absorb(self, other: _Partial) -> None:
        """Join ``other`` part by part in reverse: this one's largest with its smallest (differencing)."""
        pairs = zip(self.parts, reversed(other.parts), strict=True)
        self.parts = sorted((_Part(a.items + b.items) for a, b in pairs), key=_Part.key, reverse=True)


def balanced_partition(lengths: Sequence[int], k: int) -> list[list[int]]:
    """The indices of ``lengths`` split into exactly ``k`` non-empty lists of balanced sums, by the
    Karmarkar–Karp largest differencing method (the one verl uses with ``equal_size=False``).

    Every index starts as a partition of its own into ``k`` parts (itself and ``k - 1`` empty ones); the two
    partial partitions of largest spread are merged, largest part with smallest, until one is left.
    Returned largest token sum first, each list's indices ascending. Needs ``1 <= k <= len(lengths)``."""
    n = len(lengths)
    if not 1 <= k <= n:
        raise ValueError(f"cannot split {n} rows into {k} micro-batches (need 1 <= k <= rows)")
    heap = [
        _Partial([_Part([(i, int(size))]), *(_Part([]) for _ in range(k - 1))])
        for i, size in enumerate(lengths)
    ]
    heapq.heapify(heap)
    while len(heap) > 1:
        first, second = heapq.heappop(heap), heapq.heappop(heap)
        first.absorb(second)
        heapq.heappush(heap, first)
    out = [sorted(i for i, _ in part.items) for part in heap[0].parts]
    assert all(out), "a micro-batch came out empty"  # never with k <= n: a merge keeps min(k, rows) parts
    return out


def token_micro_batches(lengths: Sequence[int], rows: Sequence[int], count: int) -> list[list[int]]:
    """``rows`` (one mini-batch, indices into ``lengths``) as ``min(count, len(rows))`` micro-batches of
    balanced token sums (:func:`balanced_partition` over the rows' positions in the mini-batch)."""
    rows = list(rows)
    parts = balanced_partition([lengths[r] for r in rows], min(count, len(rows)))
    return [[rows[i] for i in part] for part in parts]

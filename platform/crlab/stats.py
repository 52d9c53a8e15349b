"""Uncertainty, paired tests and power for ablation tables: pure functions of per-problem scores.

Input is a matrix ``x`` of shape (S, P): one row per seed (seeds in ascending order), one column per
problem (problem ids in ascending order), each entry a problem's score in one run, e.g. its unbiased
pass@k (``c / n`` for pass@1). A run's metric is its row mean; a cell's value is the mean over its seeds.
Every figure below can be recomputed from the records with this exact procedure:

- **Cell interval** (:func:`bootstrap_ci`): a two-level percentile bootstrap. ``rng =
  numpy.random.default_rng(0)``; for each of ``RESAMPLES = 2000`` resamples, in order: ``s =
  rng.integers(0, S, size=S)`` (seeds with replacement), then ``q = rng.integers(0, P, size=(S, P))``
  (problems with replacement, row j for the j-th drawn seed); the resample's statistic is the mean of
  ``x[s[j], q[j, i]]`` over all j, i. The interval is ``numpy.percentile(stats, [2.5, 97.5])`` (linear
  interpolation). With one seed the seed draw is always row 0, so the interval is over problems only.
- **Paired difference** (:func:`paired`): cell A against baseline B on the seeds and problems both have
  (pairs by seed value and problem id): ``d = x_A - x_B`` (S, P); ``delta = d.mean()``; its interval is
  :func:`bootstrap_ci` of ``d`` (same procedure, a fresh ``default_rng(0)``).
- **p-value, 2 or more seeds** (:func:`seed_t_p`): a two-sided one-sample t-test on the S seed means of
  ``d``: ``m_j = d[j].mean()``, ``t = mean(m) / (sd(m, ddof=1) / sqrt(S))``, ``p = P(|T_{S-1}| >= |t|)``
  with Student's t at S - 1 degrees of freedom (:func:`t_sf`, the closed-form series of Abramowitz &
  Stegun 26.7.3/26.7.4; no random draws). Each seed mean already carries its problems' sampling noise,
  so the spread of the seed means holds both the run-to-run and the per-problem variation (on these
  problems: the test holds the problem set fixed, the interval resamples it); with few seeds the t
  quantile (4.30 at S = 3) pays for that spread being estimated from S numbers. ``mean(m) == 0``
  (within ``1e-9 * max|d|``) gives p = 1; seed means that all agree (spread within the same tolerance)
  estimate no seed spread, and p is then the permutation test below over all (seed, problem) pairs.
  Calibration (benchmarks/ablation_calibration.py, two identical configs, 3 seeds x 32 problems x 8
  samples): false alarms at p < 0.05 of 5.0%, 5.9%, 5.6% over 2000 simulated sweeps for a run-to-run
  effect sd of 0, 0.1, 0.3 (logit), where the permutation test over (seed, problem) pairs gave 4.5%,
  9.8%, 35.5% and the centred two-level bootstrap (the interval's resamples turned into a test) 1.3%,
  4.7%, 14.7% over 150. With 2 seeds the t-test is conservative (2.2%, 2.8%, 3.8% over 1000; exact
  ties of the two seed means go to the permutation test); with 5 seeds 6.0%, 5.3%, 4.9%.
- **p-value, one seed** (:func:`permutation_p`): a paired sign-flip permutation test, two-sided, on the
  problems: under "no difference" the two runs' scores of a problem are exchangeable, so each ``d``
  may flip its sign. Statistic ``T = |sum(d)|``. Pairs with ``d == 0`` are dropped (flipping them changes
  nothing, so the exact p is the same); with m pairs left, ``m <= EXACT_MAX = 13`` enumerates all
  ``2**m`` sign vectors and ``p = #{T* >= T} / 2**m`` (the identity included); larger m draws
  ``PERMUTATIONS = 10000`` sign vectors ``flips = default_rng(0).integers(0, 2, size=(10000, m),
  dtype=uint8)`` (1 = flip) and ``p = (1 + #{T* >= T}) / 10001``. ``T* >= T`` counts ties: ``T* >= T -
  1e-9 * sum(|d|)``. m = 0 gives p = 1. The test holds the two runs fixed: it answers "does this run
  differ from that run on these problems", and cannot see how much another seed would move either.
- **Holm** (:func:`holm`): the m p-values sorted ascending, ``p_holm_(i) = max_{j<=i} min(1, (m-j+1)
  p_(j))``; a cell "differs at 0.05" when ``p_holm < 0.05``.
- **Power** (:func:`variance_components`, :func:`detectable`, :func:`seeds_needed`): a one-way random
  effects split of ``d``: ``var_problem`` = the pooled within-seed variance over problems (ddof 1),
  ``var_seed = max(0, var(seed means, ddof 1) - var_problem / P)`` (0 with one seed, which makes the
  figures below lower bounds). The variance of delta with S seeds is ``V/S`` with ``V = var_seed +
  var_problem / P``. At two-sided level ``ALPHA = 0.05`` and power ``POWER = 0.8``, for the t-test above
  (the usual approximation to the noncentral t), ``k(S) = t_{0.975, S-1} + t_{0.8, S-1}`` (one seed: the
  normal ``z_0.975 + z_0.8 = 2.8016``; t quantiles by bisection of :func:`t_sf`, normal ones above 1000
  degrees of freedom); the smallest detectable difference is ``k(S) * sqrt(V / S)`` and the seeds needed
  for a difference ``delta`` are the smallest S >= 2 with ``k(S)**2 * V / delta**2 <= S``.

numpy only (the normal quantiles come from :class:`statistics.NormalDist`, Student's t's from :func:`t_sf`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

RESAMPLES = 2000  # bootstrap resamples per interval
PERMUTATIONS = 10000  # random sign vectors when the test is too large to enumerate
EXACT_MAX = 13  # enumerate every sign vector up to 2**13 = 8192 of them
SEED = 0  # every interval and every random test starts from numpy.random.default_rng(SEED)
LEVEL = 0.95
SEED_TEST = "t-test over seed means"  # 2 or more seeds
PROBLEM_TEST = "sign-flip permutation over problems"  # one seed
ALPHA = 0.05
POWER = 0.80
NORMAL_DF = 1000  # t quantiles above this many degrees of freedom are the normal's (within 0.1%)


@dataclass(frozen=True)
class Paired:
    """A paired difference: its mean, 95% interval and p-value, on ``seeds`` x ``problems`` pairs."""

    delta: float
    ci95: tuple[float, float]
    p: float
    seeds: int
    problems: int
    test: str  # SEED_TEST or PROBLEM_TEST: which test gave p


def _matrix(x: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    data = np.asarray(x, dtype=np.float64)  # (S, P)
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"need a (seeds, problems) matrix with at least one of each, got shape {data.shape}")
    return data


def bootstrap_means(
    x: Sequence[Sequence[float]] | np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """The two-level bootstrap distribution (B,) of the mean of ``x`` (S, P): per resample, seeds with
    replacement, then problems with replacement within each drawn seed (the draws: module docstring)."""
    data = _matrix(x)
    n_seeds, n_problems = data.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)  # (B,)
    for b in range(resamples):
        rows = rng.integers(0, n_seeds, size=n_seeds)  # (S,)
        cols = rng.integers(0, n_problems, size=(n_seeds, n_problems))  # (S, P)
        means[b] = data[rows[:, None], cols].mean()
    return means


def bootstrap_ci(
    x: Sequence[Sequence[float]] | np.ndarray,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Two-level percentile bootstrap interval of the mean of ``x`` (S, P): seeds, then problems within
    each drawn seed (see the module docstring for the exact draws)."""
    means = bootstrap_means(x, resamples, seed)  # (B,)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def t_sf(t: float, df: int) -> float:
    """Two-sided tail ``P(|T| >= |t|)`` of Student's t with integer ``df`` >= 1: the finite series of
    Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df) in ``theta = atan(|t| / sqrt(df))``."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, term = math.cos(theta) ** 2, 1.0
    if df % 2 == 0:  # A = sin(theta) (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        total = 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        inside = math.sin(theta) * total
    else:  # A = 2/pi (theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3))), df > 1
        total = 1.0 if df > 1 else 0.0
        for j in range(1, (df - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    return min(1.0, max(0.0, 1.0 - inside))


def seed_t_p(d: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Two-sided one-sample t-test that the seed means of ``d`` (S, P), S >= 2, average 0: ``t = mean /
    (sd / sqrt(S))`` over the S seed means (sd with ddof 1), S - 1 degrees of freedom (:func:`t_sf`).
    Seed means that all agree (|spread| within ``1e-9 * max|d|``) carry no estimate of the seed-to-seed
    spread: then the test is :func:`permutation_p` over the (seed, problem) pairs."""
    data = _matrix(d)
    n_seeds = data.shape[0]
    if n_seeds < 2:
        raise ValueError("a t-test over seeds needs at least 2 seeds")
    seed_means = data.mean(axis=1)  # (S,)
    observed = float(seed_means.mean())
    tolerance = 1e-9 * float(np.abs(data).max())
    if abs(observed) <= tolerance:
        return 1.0
    if float(seed_means.max() - seed_means.min()) <= tolerance:
        return permutation_p(data)
    return t_sf(observed / math.sqrt(float(seed_means.var(ddof=1)) / n_seeds), n_seeds - 1)


def permutation_p(d: Sequence[Sequence[float]] | np.ndarray, seed: int = SEED) -> float:
    """Two-sided paired sign-flip permutation p-value of the differences ``d`` (any shape; each entry one
    (seed, problem) pair): exact up to ``EXACT_MAX`` non-zero pairs, else ``PERMUTATIONS`` random flips."""
    values = np.asarray(d, dtype=np.float64).ravel()
    values = values[values != 0.0]  # (m,)
    m = values.size
    if m == 0:
        return 1.0
    observed = abs(values.sum())
    tie = observed - 1e-9 * np.abs(values).sum()
    if m <= EXACT_MAX:
        bits = (np.arange(2**m)[:, None] >> np.arange(m)[None, :]) & 1  # (2**m, m): every sign vector
        sums = np.abs(values.sum() - 2.0 * (bits @ values))  # (2**m,)
        return float(np.count_nonzero(sums >= tie) / 2**m)
    flips = np.random.default_rng(seed).integers(0, 2, size=(PERMUTATIONS, m), dtype=np.uint8)  # (R, m)
    hits = 0
    for start in range(0, PERMUTATIONS, 1000):
        chunk = flips[start : start + 1000].astype(np.float64)  # (<=1000, m)
        hits += int(np.count_nonzero(np.abs(values.sum() - 2.0 * (chunk @ values)) >= tie))
    return (1 + hits) / (PERMUTATIONS + 1)


def paired(a: Sequence[Sequence[float]] | np.ndarray, b: Sequence[Sequence[float]] | np.ndarray) -> Paired:
    """``a - b`` for matrices (S, P) already aligned by seed and problem: delta, its interval and p (a
    t-test over the seed means with 2 or more seeds, the sign-flip permutation over problems with one)."""
    d = _matrix(a) - _matrix(b)  # (S, P)
    if d.shape[0] > 1:
        p, test = seed_t_p(d), SEED_TEST
    else:
        p, test = permutation_p(d), PROBLEM_TEST
    return Paired(float(d.mean()), bootstrap_ci(d), p, d.shape[0], d.shape[1], test)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that are not None (None stays None), in input order."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, running = len(present), 0.0
    adjusted: list[float | None] = [None] * len(pvalues)
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def variance_components(d: Sequence[Sequence[float]] | np.ndarray) -> tuple[float, float]:
    """(var_seed, var_problem) of the differences ``d`` (S, P): the spread of the seed effect and of the
    problems within a seed (one-way random effects, moments; var_seed is 0 with one seed)."""
    data = _matrix(d)
    n_seeds, n_problems = data.shape
    within = float(data.var(axis=1, ddof=1).mean()) if n_problems > 1 else 0.0
    if n_seeds < 2:
        return 0.0, within
    between = float(data.mean(axis=1).var(ddof=1)) - within / n_problems
    return max(0.0, between), within


def t_quantile(prob: float, df: int) -> float:
    """The ``prob`` quantile (0.5 < prob < 1) of Student's t with ``df`` degrees of freedom: bisection of
    :func:`t_sf` to 1e-12; above ``NORMAL_DF`` degrees of freedom, the normal quantile."""
    if df > NORMAL_DF:
        return NormalDist().inv_cdf(prob)
    tail, low, high = 2 * (1 - prob), 0.0, 1.0
    while t_sf(high, df) > tail:
        high *= 2
    while high - low > 1e-12 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if t_sf(mid, df) > tail else (low, mid)
    return (low + high) / 2


def multiplier(seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Standard errors between 0 and the smallest detectable difference: ``t_{1-alpha/2, S-1} + t_{power,
    S-1}`` for the t-test over ``seeds`` >= 2 seed means, ``z_{1-alpha/2} + z_power`` with one seed."""
    if seeds < 2:
        normal = NormalDist()
        return normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)
    return t_quantile(1 - alpha / 2, seeds - 1) + t_quantile(power, seeds - 1)


def detectable(
    var_seed: float, var_problem: float, seeds: int, problems: int, alpha: float = ALPHA, power: float = POWER
) -> float:
    """The smallest difference a paired comparison with ``seeds`` x ``problems`` detects with ``power``."""
    return multiplier(seeds, alpha, power) * math.sqrt((var_seed + var_problem / problems) / seeds)


def seeds_needed(
    delta: float,
    var_seed: float,
    var_problem: float,
    problems: int,
    alpha: float = ALPHA,
    power: float = POWER,
) -> int:
    """The fewest seeds (at least 2) with which a paired comparison on ``problems`` problems detects
    ``delta`` with ``power``: the smallest S with ``multiplier(S)**2 * V / delta**2 <= S``."""
    if delta <= 0:
        raise ValueError(f"the difference to detect must be positive, got {delta}")
    ratio = (var_seed + var_problem / problems) / delta**2
    enough = lambda n: multiplier(n, alpha, power) ** 2 * ratio <= n  # noqa: E731
    low, high = 1, 2  # enough(low) is False (one seed is never enough: the t-test needs 2); find a high
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:  # the multiplier falls as seeds grow, so enough() is monotone
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high

"""crlab.stats against values worked out by hand: a paired difference on 4 problems x 2 seeds, the t-test over
seed means and Student's t tail it uses, a permutation test small enough to enumerate, Holm on 3 p-values,
identical cells, intervals whose every resample is known, and the power figures of the same 4 x 2 example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crlab import stats

# pass@1 per problem (c / n with n = 4) of a cell A and its baseline B; rows seeds 0, 1; columns problems p1..p4
A = [[1.00, 0.50, 0.75, 0.00], [1.00, 1.00, 0.25, 0.50]]
B = [[0.50, 0.50, 0.25, 0.00], [0.75, 1.00, 0.25, 0.75]]
# d = A - B = [[0.5, 0, 0.5, 0], [0.25, 0, 0, -0.25]]: seed means 0.25 and 0, delta 0.125. The t-test over
# the 2 seed means: sd sqrt(0.03125), standard error sqrt(0.03125 / 2) = 0.125, t = 1 at 1 degree of freedom
# (Cauchy): p = 1 - (2 / pi) atan(1) = 0.5. The permutation over the (seed, problem) pairs (the rule for one
# seed): four pairs are non-zero, magnitudes 0.5, 0.5, 0.25, 0.25, sum 1.0; of the 16 sign vectors, |sum| >=
# 1.0 for + + + + (1.5), + + + - and + + - + (1.0), and their mirror images: 6 of 16, p = 0.375.


def test_paired_difference_on_4_problems_by_2_seeds():
    got = stats.paired(A, B)
    assert got.delta == pytest.approx(0.125, abs=1e-15)
    assert got.p == pytest.approx(0.5, abs=1e-15) and got.test == stats.SEED_TEST
    assert (got.seeds, got.problems) == (2, 4)
    # every resample mean lies between the smallest and largest difference, and the interval holds delta
    assert -0.25 <= got.ci95[0] <= 0.125 <= got.ci95[1] <= 0.5


def test_one_seed_is_tested_by_the_permutation_over_its_problems():
    got = stats.paired(A[:1], B[:1])  # d = [0.5, 0, 0.5, 0]: two non-zero pairs, |sum| 1 only for ++ and --
    assert got.p == pytest.approx(2 / 4, abs=1e-15) and got.test == stats.PROBLEM_TEST


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (1.0, 1, 0.5),  # Cauchy: 1 - (2 / pi) atan(1)
        (math.sqrt(3), 1, 1 / 3),  # theta = pi / 3: 1 - 2 / 3
        (math.sqrt(6), 2, 1 - math.sqrt(3) / 2),  # df 2: 1 - t / sqrt(t**2 + 2) = 1 - sqrt(6 / 8)
        (math.sqrt(3), 3, 0.5 - 1 / math.pi),  # theta = pi / 4: 1 - (2 / pi) (pi / 4 + 1 / 2)
        (-math.sqrt(3), 3, 0.5 - 1 / math.pi),  # two-sided: the sign does not matter
        (2.0, 4, 1 - 5 * math.sqrt(2) / 8),  # theta = pi / 4: 1 - sin (1 + cos**2 / 2) = 1 - (1 / sqrt 2)(5 / 4)
        (0.0, 5, 1.0),
        (math.inf, 2, 0.0),
        # the tables' 97.5% quantiles (to 9 decimals) leave 5% in the two tails
        (12.706204736, 1, 0.05), (4.302652730, 2, 0.05), (3.182446305, 3, 0.05), (2.776445105, 4, 0.05),
        (2.570581836, 5, 0.05), (2.228138852, 10, 0.05), (2.042272456, 30, 0.05),
    ],
)  # fmt: skip
def test_students_t_two_sided_tail(t, df, p):
    assert stats.t_sf(t, df) == pytest.approx(p, abs=1e-9)


@pytest.mark.parametrize(
    ("d", "p"),
    [
        ([[0.5, 0, 0.5, 0], [0.25, 0, 0, -0.25]], 0.5),  # A - B: seed means 0.25, 0: t = 1, df 1
        ([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]], 1 - math.sqrt(3 / 5)),  # means 0, .25, .5: t = sqrt 3, df 2
        ([[0.25, -0.25], [-0.25, 0.25]], 1.0),  # seed means 0, 0: the mean difference is 0
        ([[0.5], [-0.5]], 1.0),  # seed means cancel: mean 0
        ([[0.0] * 4] * 3, 1.0),  # identical cells
        # zero seed spread: every seed mean 0.25, so the seeds say nothing about their spread; p is the
        # permutation over the (seed, problem) pairs: 0.5, 0.5, 0.25, 0.25 (zeros dropped), only + + + +
        # and - - - - reach |sum| 1.5: 2 of 16
        ([[0.5, 0.0], [0.0, 0.5], [0.25, 0.25]], 2 / 16),
        ([[0.25, 0.25], [0.25, 0.25]], 2 / 16),  # a constant: 4 pairs of 0.25, again only the two extremes
    ],
)  # fmt: skip
def test_t_test_over_seed_means(d, p):
    assert stats.seed_t_p(d) == pytest.approx(p, abs=1e-12)


def test_t_test_needs_two_seeds():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.seed_t_p([[0.5, 0.25]])


@pytest.mark.parametrize(
    ("d", "p"),
    [
        ([0.5, 0.5, 0.25, -0.25], 6 / 16),  # the example above, zeros dropped: the same p
        ([0.5, 0, 0.5, 0, 0.25, 0, 0, -0.25], 6 / 16),  # with the zeros: 96 of 256
        ([1.0, 1.0, 1.0], 2 / 8),  # only all-plus and all-minus reach 3
        ([1.0, -1.0], 1.0),  # observed sum 0: every vector is at least as extreme
        ([0.25], 1.0),  # one pair: both signs give |0.25|
        ([0.0, 0.0], 1.0),  # no non-zero pair
        ([1.0, 2.0, 4.0], 2 / 8),  # distinct magnitudes: only +++ and --- reach 7
        ([1.0, 2.0, 3.0], 2 / 8),  # sums 6, 0, 2, -4, 4, -2, 0, -6: |.| >= 6 for 2 of 8
    ],
)
def test_permutation_test_enumerated_exactly(d, p):
    assert stats.permutation_p(d) == pytest.approx(p, abs=1e-15)


def test_permutation_test_matches_brute_force_over_all_sign_vectors():
    rng = np.random.default_rng(7)
    d = rng.choice([-0.5, -0.25, 0.25, 0.5, 0.75], size=10)
    sums = [abs(sum(s * v for s, v in zip(signs, d, strict=True))) for signs in _vectors(len(d))]
    expected = sum(1 for t in sums if t >= abs(d.sum()) - 1e-12) / len(sums)
    assert stats.permutation_p(d) == pytest.approx(expected, abs=1e-15)


def _vectors(m):
    for i in range(2**m):
        yield [-1 if (i >> j) & 1 else 1 for j in range(m)]


def test_permutation_test_beyond_enumeration_is_seeded_and_never_zero():
    d = np.full(40, 0.25)  # 2**40 vectors: Monte Carlo; the observed sum is the most extreme there is
    p = stats.permutation_p(d)
    assert p == stats.permutation_p(d) == pytest.approx(1 / (stats.PERMUTATIONS + 1), abs=1e-15)
    noise = np.tile([0.25, -0.25], 20)  # observed sum 0: every draw is at least as extreme
    assert stats.permutation_p(noise) == 1.0


@pytest.mark.parametrize(
    ("pvalues", "adjusted"),
    [
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # 3*0.01; 2*0.03; 1*0.04 -> max(0.06, 0.04)
        ([0.5, 0.2, 0.01], [0.5, 0.4, 0.03]),  # 3*0.01; 2*0.2; 1*0.5
        ([0.7, 0.6, 0.01], [1.0, 1.0, 0.03]),  # 3*0.01; 2*0.6 = 1.2 caps at 1; then max(1, 0.7)
        ([0.02, None, 0.02], [0.04, None, 0.04]),  # None stays; ties: 2*0.02, then max(0.04, 1*0.02)
    ],
)
def test_holm_on_3_pvalues(pvalues, adjusted):
    got = stats.holm(pvalues)
    assert [None if g is None else round(g, 12) for g in got] == adjusted


def test_identical_cells_give_delta_0_interval_0_0_and_p_1():
    same = [[1.0, 0.25, 0.0, 0.5], [0.75, 0.75, 0.0, 1.0]]
    got = stats.paired(same, [row[:] for row in same])
    assert got.delta == 0.0 and got.ci95 == (0.0, 0.0) and got.p == 1.0


@pytest.mark.parametrize(
    ("x", "interval"),
    [
        ([[0.25, 0.25], [0.25, 0.25]], (0.25, 0.25)),  # a constant: every resample's mean is it
        ([[0.0, 1.0]], (0.0, 1.0)),  # one seed, two problems: means 0 (1/4), 0.5 (1/2), 1 (1/4)
        ([[0.0, 0.0], [1.0, 1.0]], (0.0, 1.0)),  # seeds 0 and 1, flat within: the seed draw decides
    ],
)
def test_intervals_whose_resamples_are_known(x, interval):
    assert stats.bootstrap_ci(x) == pytest.approx(interval, abs=1e-15)


def test_two_level_interval_is_near_the_normal_one_with_the_same_variance():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 0.05, size=(3, 1))
    x = np.clip(0.5 + seed_effect + rng.normal(0, 0.3, size=(3, 200)), 0, 1)  # (S, P)
    low, high = stats.bootstrap_ci(x)
    assert low < x.mean() < high
    # the bootstrap's variance with S seeds: var(seed means) (S-1)/S / S, plus the problems within, again
    var_seed, var_problem = x.mean(axis=1).var(ddof=0), x.var(axis=1, ddof=0).mean()
    half = 1.96 * math.sqrt(var_seed / 3 + var_problem / (3 * 200))
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert stats.bootstrap_ci(x) == (low, high)  # seeded


def test_power_of_the_4_by_2_example():
    d = np.array(A) - np.array(B)
    var_seed, var_problem = stats.variance_components(d)
    # within seeds (ddof 1): seed 0 sum of squares 4 * 0.25**2 = 0.25 -> 1/12; seed 1 0.125 -> 1/24; mean 1/16
    # seed means 0.25, 0: var 0.03125; minus (1/16) / 4 -> 0.015625
    assert (var_seed, var_problem) == pytest.approx((0.015625, 0.0625), abs=1e-15)
    # 2 seeds, the t-test's 1 degree of freedom (Cauchy: quantile tan(pi (q - 1/2))): k = t_0.975 + t_0.80
    k = math.tan(0.475 * math.pi) + math.tan(0.3 * math.pi)  # 12.7062 + 1.3764
    # V = 0.015625 + 0.0625 / 4 = 0.03125; with 2 seeds sqrt(V / 2) = 0.125
    assert stats.detectable(var_seed, var_problem, 2, 4) == pytest.approx(k * 0.125, abs=1e-9)
    # the normal approximation's z**2 * 0.03125 / 0.024**2 = 425.8 -> 426; the t's quantiles at 427 degrees of
    # freedom are a little wider: 428 seeds to detect the paper's 2.4 points
    needed = stats.seeds_needed(0.024, var_seed, var_problem, 4)
    ratio = 0.03125 / 0.024**2
    assert needed == 428
    assert (
        stats.multiplier(needed) ** 2 * ratio <= needed
        and stats.multiplier(needed - 1) ** 2 * ratio > needed - 1
    )
    assert stats.variance_components([[0.5, 0.0, 0.5, 0.0]]) == pytest.approx((0.0, 1 / 12), abs=1e-15)


# the tables' t quantiles: df 1 0.975 12.706204736, 0.80 1.376381920; df 2 4.302652730, 1.060660172; df 3
# 3.182446305, 0.978472312. k(S) = t_0.975 + t_0.80 at S - 1 degrees of freedom: k(2)**2 = 198.31,
# k(3)**2 = 5.363313**2 = 28.765, k(4)**2 = 4.160919**2 = 17.313.
@pytest.mark.parametrize(
    ("var_seed", "var_problem", "problems", "delta", "seeds"),
    [
        (0.001, 0.0, 4, 0.1, 3),  # V / delta**2 = 0.1: 2 seeds need 19.8 > 2; 3 need 2.88 <= 3
        (0.0011, 0.0, 4, 0.1, 4),  # 0.11: 3 seeds need 3.16 > 3; 4 need 1.90 <= 4
        (0.0, 0.004, 4, 0.1, 3),  # V from the problems alone, 0.004 / 4 = 0.001: 0.1 again
        (0.0001, 0.0, 4, 0.1, 2),  # 0.01: 2 seeds need 1.98 <= 2 (one seed is never enough for the t-test)
    ],
)
def test_seeds_needed_with_t_quantiles(var_seed, var_problem, problems, delta, seeds):
    assert stats.seeds_needed(delta, var_seed, var_problem, problems) == seeds


@pytest.mark.parametrize(
    ("prob", "df", "q"),
    [(0.975, 1, 12.706204736), (0.8, 1, 1.376381920), (0.975, 2, 4.302652730), (0.8, 2, 1.060660172),
     (0.975, 3, 3.182446305), (0.8, 3, 0.978472312), (0.975, 30, 2.042272456), (0.975, 5000, 1.959963985)],
)  # fmt: skip
def test_t_quantiles(prob, df, q):
    assert stats.t_quantile(prob, df) == pytest.approx(q, abs=1e-8)
    assert stats.multiplier(1) == pytest.approx(1.959963985 + 0.841621234, abs=1e-8)  # one seed: normal

"""How often the ablation's statistics call two identical configs different, on simulated sweeps: the false
alarms (p < 0.05) of the p-value `platform ablation` reports, of the rule it replaced and of the candidates
measured against it, and how often the two-level bootstrap interval excludes 0.

Each simulated comparison: two configs with no true difference, ``--seeds`` runs each, evaluated on
``--problems`` problems with ``--samples`` samples per problem; a problem's pass probability is
``sigmoid(difficulty + run effect)``, difficulty ~ N(0, 1.5) per problem (the same for every run), the run
effect ~ N(0, sd) per run (what differs between training runs of one config: ``--run-sd``, on the logit
scale). The rules, on the paired differences ``d`` (seeds x problems):

- *t over seeds (new)*: :func:`crlab.stats.seed_t_p`, what :func:`crlab.stats.paired` reports with 2 or more
  seeds (a one-sample t-test of the S seed means of d, S - 1 degrees of freedom);
- *permutation (old)*: :func:`crlab.stats.permutation_p` over the (seed, problem) pairs, the runs held fixed
  (what `paired` reported before; it still does with one seed, where it is the right test);
- *bootstrap*: the two-level bootstrap of the interval turned into a test: its 2000 resampled means
  (:func:`crlab.stats.bootstrap_means`) centred at zero (minus the observed mean), ``p = (1 + #{|centred| >=
  |observed|}) / 2001``;
- *t, floored*: the t-test with each seed mean's variance taken as at least the within-seed variance of d
  over the problems divided by P.

    python benchmarks/ablation_calibration.py [--sweeps 150] [--seeds 3] [--problems 32] [--samples 8]
                                              [--run-sd 0.1 0.3] [--quick]

Prints, for a run effect of 0 and of each ``--run-sd``, the share of sweeps where each rule gives p < 0.05
and where the interval excludes 0 (all should be near 0.05 or below). ``--quick`` measures only the rules
without a bootstrap (new and old), so that many more sweeps fit in the same time.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from crlab import stats

Rule = Callable[[np.ndarray, "np.ndarray | None"], float]  # (d (S, P), bootstrap means of d or None) -> p


def bootstrap_p(d: np.ndarray, means: np.ndarray | None) -> float:
    """The centred two-level bootstrap test (see the module docstring)."""
    means = stats.bootstrap_means(d) if means is None else means  # (B,)
    observed = float(d.mean())
    hits = np.count_nonzero(np.abs(means - observed) >= abs(observed) - 1e-9 * float(np.abs(d).max()))
    return (1 + int(hits)) / (means.size + 1)


def floored_t_p(d: np.ndarray, means: np.ndarray | None) -> float:
    """The t-test over seed means with a seed mean's variance at least the problems' (see the docstring)."""
    seed_means = d.mean(axis=1)  # (S,)
    var = max(float(seed_means.var(ddof=1)), float(d.var(axis=1, ddof=1).mean()) / d.shape[1])
    if abs(seed_means.mean()) <= 1e-12:
        return 1.0
    return 0.0 if var <= 0 else stats.t_sf(seed_means.mean() / math.sqrt(var / d.shape[0]), d.shape[0] - 1)


RULES: dict[str, tuple[Rule, bool]] = {  # name -> (p-value of d, needs the bootstrap)
    "t over seeds (new)": (lambda d, means: stats.seed_t_p(d), False),
    "permutation (old)": (lambda d, means: stats.permutation_p(d), False),
    "bootstrap": (bootstrap_p, True),
    "t, floored": (floored_t_p, False),
}


def _runs(
    args: argparse.Namespace, difficulty: np.ndarray, run_sd: float, rng: np.random.Generator
) -> np.ndarray:
    """pass@1 per problem (S, P) of ``args.seeds`` runs of one config."""
    effect = rng.normal(0.0, run_sd, size=(args.seeds, 1))  # (S, 1)
    chance = 1.0 / (1.0 + np.exp(-(difficulty[None, :] + effect)))  # (S, P)
    return rng.binomial(args.samples, chance) / args.samples


def _rates(args: argparse.Namespace, rules: dict, run_sd: float, rng: np.random.Generator) -> list[float]:
    """Per rule, then (without --quick) the interval: the share of sweeps calling the configs different."""
    alarms = np.zeros(len(rules) + (0 if args.quick else 1))
    for _ in range(args.sweeps):
        difficulty = rng.normal(0.0, 1.5, size=args.problems)  # (P,)
        d = _runs(args, difficulty, run_sd, rng) - _runs(args, difficulty, run_sd, rng)  # (S, P)
        means = None if args.quick else stats.bootstrap_means(d)  # (B,), the interval's own resamples
        for i, (rule, _) in enumerate(rules.values()):
            alarms[i] += rule(d, means) < stats.ALPHA
        if not args.quick:
            low, high = np.percentile(means, [2.5, 97.5])  # = stats.bootstrap_ci(d)
            alarms[-1] += not low <= 0.0 <= high
    return list(alarms / args.sweeps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--run-sd", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--quick", action="store_true", help="only the rules without a bootstrap")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error(
            "--seeds: the t-test over seeds needs at least 2 (with one seed, p is the permutation's)"
        )
    rules = {name: rule for name, rule in RULES.items() if not (args.quick and rule[1])}
    rng = np.random.default_rng(5)
    print(f"{args.sweeps} sweeps, {args.seeds} seeds x {args.problems} problems x {args.samples} samples, "
          "no true difference")  # fmt: skip
    columns = [f"p < 0.05: {name}" for name in rules] + ([] if args.quick else ["95% CI excludes 0"])
    print("| run effect sd (logit) | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for run_sd in [0.0, *args.run_sd]:
        print(
            f"| {run_sd} | " + " | ".join(f"{rate:.3f}" for rate in _rates(args, rules, run_sd, rng)) + " |"
        )


if __name__ == "__main__":
    main()

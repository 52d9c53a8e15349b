"""How often the ablation's statistics call two identical configs different: false positives of the paired
permutation test (p < 0.05) and of the two-level bootstrap interval (0 outside it), on simulated sweeps.

Each simulated comparison: two configs with no true difference, ``--seeds`` runs each, evaluated on
``--problems`` problems with ``--samples`` samples per problem; a problem's pass probability is
``sigmoid(difficulty + run effect)``, difficulty ~ N(0, 1.5) per problem (the same for every run), the run
effect ~ N(0, sd) per run (what differs between training runs of one config: ``--run-sd``, on the logit
scale). Every comparison goes through :func:`crlab.stats.paired`, as `platform ablation` computes it.

    python benchmarks/ablation_calibration.py [--sweeps 150] [--seeds 3] [--problems 32] [--samples 8]

Prints, for a run effect of 0 and of each ``--run-sd``, the share of sweeps where p < 0.05 and where the
interval excludes 0 (both should be near 0.05 or below).
"""

from __future__ import annotations

import argparse

import numpy as np

from crlab import stats


def _runs(
    args: argparse.Namespace, difficulty: np.ndarray, run_sd: float, rng: np.random.Generator
) -> np.ndarray:
    """pass@1 per problem (S, P) of ``args.seeds`` runs of one config."""
    effect = rng.normal(0.0, run_sd, size=(args.seeds, 1))  # (S, 1)
    chance = 1.0 / (1.0 + np.exp(-(difficulty[None, :] + effect)))  # (S, P)
    return rng.binomial(args.samples, chance) / args.samples


def _rates(args: argparse.Namespace, run_sd: float, rng: np.random.Generator) -> tuple[float, float]:
    tests = intervals = 0
    for _ in range(args.sweeps):
        difficulty = rng.normal(0.0, 1.5, size=args.problems)  # (P,)
        found = stats.paired(_runs(args, difficulty, run_sd, rng), _runs(args, difficulty, run_sd, rng))
        tests += found.p < stats.ALPHA
        intervals += not found.ci95[0] <= 0.0 <= found.ci95[1]
    return tests / args.sweeps, intervals / args.sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", type=int, default=150)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--run-sd", type=float, nargs="+", default=[0.3])
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    print(
        f"{args.sweeps} sweeps, {args.seeds} seeds x {args.problems} problems x {args.samples} samples, no true difference"
    )
    print("| run effect sd (logit) | p < 0.05 | 95% CI excludes 0 |")
    print("|---|---|---|")
    for run_sd in [0.0, *args.run_sd]:
        test, interval = _rates(args, run_sd, rng)
        print(f"| {run_sd} | {test:.3f} | {interval:.3f} |")


if __name__ == "__main__":
    main()

"""How often the plateau monitor fires on a rising curve, and how soon on one that flattens: the
``confident`` rule against the ``mean`` rule, with the tiny experiment's ``switch`` settings.

Two synthetic curves, one value a step, each value with Gaussian noise of standard deviation 0.05 (the
standard error passed to the monitor), seeds 0..N-1 (``random.Random(seed)``):

- rising: 0.01 * step for steps 1..60. A fire here is a false switch (the curve never stops rising).
- rise-then-flat: 0.01 * min(step, 30) for steps 1..80. It should fire soon after step 30: by step 50.

    python benchmarks/plateau.py [--seeds 200] [--sigma 0.05]

Prints a table (the share of seeds that fired during the rise; on the second curve the share that fired by
step 50, the share that fired before the flattening, and the median step of the first fire) and the ratio of
the false-fire rates, mean over confident. A further row gives the mean rule with the tiny experiment's
settings before the confident rule (window 4, min_delta 0.02, patience 2, min_steps 8).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from crlab.train.grpo.phases import PlateauMonitor

REPO = Path(__file__).resolve().parents[1]
RISE_STEPS, FLAT_FROM, FLAT_STEPS, BY_STEP = 60, 30, 80, 50
PREVIOUS = {"window": 4, "min_delta": 0.02, "patience": 2, "min_steps": 8}  # tiny_coder.yaml before


def tiny_settings() -> dict[str, float]:
    from crlab.config import load_config

    sw = load_config(REPO / "experiments/tiny_coder.yaml").switch
    return {"window": sw.window, "min_delta": sw.min_delta, "patience": sw.patience, "min_steps": sw.min_steps,
            "confidence": sw.confidence}  # fmt: skip


def first_fire(monitor: PlateauMonitor, curve: list[float], sigma: float, seed: int) -> int | None:
    rng = random.Random(seed)
    for step, mean in enumerate(curve, start=1):
        if monitor.update(step, mean + rng.gauss(0.0, sigma), stderr=sigma):
            return step
    return None


def rates(rule: str, settings: dict[str, float], seeds: int, sigma: float) -> dict[str, float]:
    rising = [0.01 * s for s in range(1, RISE_STEPS + 1)]
    flattening = [0.01 * min(s, FLAT_FROM) for s in range(1, FLAT_STEPS + 1)]
    false_fires, by_step, early, steps = 0, 0, 0, []
    for seed in range(seeds):
        false_fires += first_fire(PlateauMonitor(**settings, rule=rule), rising, sigma, seed) is not None
        fired = first_fire(PlateauMonitor(**settings, rule=rule), flattening, sigma, seed)
        by_step += fired is not None and fired <= BY_STEP
        early += fired is not None and fired <= FLAT_FROM
        steps += [fired] if fired is not None else []
    return {
        "rising": false_fires / seeds, "by_50": by_step / seeds, "early": early / seeds,
        "median": statistics.median(steps) if steps else float("nan"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--sigma", type=float, default=0.05)
    args = parser.parse_args()
    tiny = tiny_settings()
    previous = {**PREVIOUS, "confidence": tiny["confidence"]}
    rows = [
        ("confident", "tiny_coder.yaml", rates("confident", tiny, args.seeds, args.sigma)),
        ("mean", "tiny_coder.yaml", rates("mean", tiny, args.seeds, args.sigma)),
        ("mean", "previous", rates("mean", previous, args.seeds, args.sigma)),
    ]
    print(f"{args.seeds} seeds, noise sd {args.sigma}; tiny_coder.yaml switch: {tiny}; previous: {PREVIOUS}")
    print(f"| rule | settings | fired during the rise (60 steps) | flattening: fired by step {BY_STEP} "
          f"| fired before step {FLAT_FROM + 1} | median fire step |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for rule, name, r in rows:
        print(
            f"| {rule} | {name} | {r['rising']:.1%} | {r['by_50']:.1%} | {r['early']:.1%} | {r['median']} |"
        )
    confident, mean = rows[0][2]["rising"], rows[1][2]["rising"]
    ratio = f"{mean / confident:.1f}x" if confident else f"{mean:.1%} vs 0 (confident never fired)"
    print(f"false switches on the rising curve, mean / confident (same settings): {ratio}")


if __name__ == "__main__":
    main()

"""What the platform adds to a training step: registry writes, W&B logging, the plateau monitor, heartbeats.

Both arms run the *same* steps of the tiny coder (generate, sandbox rewards, forward, backward, optimizer
step): before each arm the model, optimizer, sampler and RNG are restored from one checkpoint, so the two
trajectories are bitwise identical and differ only in the bookkeeping. The baseline arm calls the step
alone; the platform arm also writes the step's metrics to the registry (SQLite), logs them to W&B
(offline), feeds the phase schedule and refreshes the heartbeat, as the training loop does.

    python benchmarks/step_overhead.py [--steps 5] [--rounds 3]

Prints a table (seconds per step, median over rounds) and the overhead ratio; the target is <= 3%.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "grpo.prompts_per_step=8",
    "grpo.mini_batch_size=4",
    "grpo.max_refill_rounds=0",
    "grpo.max_steps=1000",
]


def _setup(tmp: Path):  # noqa: ANN202
    from crlab.config import load_config
    from crlab.registry import Registry
    from crlab.train.loop import register_run
    from crlab.train.trainer import Trainer

    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [*SMALL, f"paths.runs_dir={tmp / 'runs'}"])
    registry = Registry(f"sqlite:///{tmp / 'bench.db'}")
    trainer = Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)
    registry.start_attempt(run.id, host="bench", pid=os.getpid())
    trainer._start(run, resume=False)
    start = trainer.checkpoints.save(trainer.engine, step=0, client_state=trainer._client_state())
    return trainer, registry, run, start


def _arm(trainer, registry, run, start, steps: int, platform: bool) -> list[float]:  # noqa: ANN001
    state = trainer.checkpoints.load(trainer.engine, start)
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.schedule.load_state_dict(state["schedule"])
    times = []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        metrics = trainer._one_step()
        if platform:
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            registry.log_metrics(run.id, step, finite)
            trainer.tracker.log(finite, step)
            trainer.schedule.observe(step, metrics)
            registry.heartbeat(run.id)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both arms")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory() as tmp:
        trainer, registry, run, start = _setup(Path(tmp))
        _arm(trainer, registry, run, start, 1, platform=False)  # warm-up: first-call costs out of the way
        base, plat = [], []
        for _ in range(args.rounds):
            base.append(sum(_arm(trainer, registry, run, start, args.steps, platform=False)) / args.steps)
            plat.append(sum(_arm(trainer, registry, run, start, args.steps, platform=True)) / args.steps)
        trainer.close()
    b, p = statistics.median(base), statistics.median(plat)
    overhead = p / b - 1.0
    print(f"{'arm':<40}{'s/step (median)':>18}{'rounds':>30}")
    print(f"{'baseline: step only':<40}{b:>18.3f}{'  '.join(f'{x:.3f}' for x in base):>30}")
    print(f"{'platform: + registry, W&B, monitor':<40}{p:>18.3f}{'  '.join(f'{x:.3f}' for x in plat):>30}")
    print(f"overhead: {overhead * 100:+.2f}% (platform/baseline = {p / b:.4f}; target <= +3%)")
    return 0 if overhead <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())

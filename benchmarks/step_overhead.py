"""What the platform adds to a training step: registry writes, W&B logging, the plateau monitor, heartbeats.

Both arms run the *same* steps of the tiny coder (generate, sandbox rewards, forward, backward, optimizer
step): before each arm the model, optimizer, sampler and RNG are restored from one checkpoint, so the two
trajectories are bitwise identical and differ only in the bookkeeping. The baseline arm calls the step
alone; the platform arm also writes the step's metrics to the run's journal (its background writer sends
them to the registry, SQLite), logs them to W&B (offline), feeds the phase schedule and refreshes the
heartbeat, as the training loop does.

    python benchmarks/step_overhead.py [--steps 5] [--rounds 3]

Rounds alternate which arm goes first. Prints a table (seconds per step, mean over rounds, and each
round) and the overhead ratio; the target is <= 3%.
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
    from crlab.registry.lifecycle import register_run
    from crlab.train.loop.trainer import Trainer

    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [*SMALL, f"paths.runs_dir={tmp / 'runs'}"])
    registry = Registry(f"sqlite:///{tmp / 'bench.db'}")
    trainer = Trainer(cfg, registry, run=None)
    run = register_run(registry, cfg)  # attempt 1, held by this process
    trainer._start(run, resume=False)
    start = trainer.checkpoints.save(trainer.engine, step=0, client_state=trainer._client_state())
    return trainer, registry, run, start


class _Arm:
    """Runs ``steps`` steps from the starting checkpoint; the platform arm also does the bookkeeping."""

    logged = 0  # W&B wants increasing steps across the whole benchmark

    def __init__(self, trainer, registry, run, start) -> None:  # noqa: ANN001
        self.trainer, self.registry, self.run, self.start = trainer, registry, run, start

    def __call__(self, steps: int, platform: bool) -> float:
        t = self.trainer
        state = t.checkpoints.load(t.engine, self.start)
        t.sampler.load_state_dict(state["sampler"])
        t.schedule.load_state_dict(state["schedule"])
        total = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            metrics = t._one_step({})
            if platform:
                _Arm.logged += 1
                finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
                t.recorder.metrics(_Arm.logged, finite)  # the run's journal; its writer sends it on
                t.tracker.log(finite, _Arm.logged)
                t.schedule.observe(_Arm.logged, metrics)
                self.registry.heartbeat(self.run.id)
            total += time.perf_counter() - t0
        return total / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both arms, alternating the order")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    with tempfile.TemporaryDirectory() as tmp:
        trainer, registry, run, start = _setup(Path(tmp))
        arm = _Arm(trainer, registry, run, start)
        arm(1, platform=True)  # warm-up: first-call costs out of the way
        base, plat = [], []
        for r in range(args.rounds):  # alternate which arm goes first, so drift cancels
            order = (False, True) if r % 2 == 0 else (True, False)
            for platform in order:
                (plat if platform else base).append(arm(args.steps, platform))
        trainer.close()
    b, p = statistics.mean(base), statistics.mean(plat)
    overhead = p / b - 1.0
    print(f"{'arm':<40}{'s/step (mean)':>18}{'rounds':>30}")
    print(f"{'baseline: step only':<40}{b:>18.3f}{'  '.join(f'{x:.3f}' for x in base):>30}")
    print(f"{'platform: + registry, W&B, monitor':<40}{p:>18.3f}{'  '.join(f'{x:.3f}' for x in plat):>30}")
    print(f"overhead: {overhead * 100:+.2f}% (platform/baseline = {p / b:.4f}; target <= +3%)")
    return 0 if overhead <= 0.03 else 1


if __name__ == "__main__":
    sys.exit(main())

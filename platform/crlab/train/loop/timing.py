"""Named, timed phases of a training step, as verl's ``marked_timer``.

A step fills one dict of seconds per phase (``generate``, ``reward``, ``logprob``, ``update``,
``checkpoint``, ``step``); a phase entered twice in a step (DAPO refill rounds) adds up. The loop logs
the dict as ``time/<phase>_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

STEP_PHASES = ("generate", "reward", "logprob", "update", "checkpoint")


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in the ``with`` block to ``timings[name]`` (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def time_metrics(timings: dict[str, float]) -> dict[str, float]:
    """``time/<phase>_s`` for every step phase (0.0 where the step did not enter it) and any other timed."""
    names = dict.fromkeys([*STEP_PHASES, *timings])
    return {f"time/{name}_s": timings.get(name, 0.0) for name in names}


STEP_LINE_KEYS = ("reward/rl_mean", "reward/crl_mean", "critique/accuracy", "eval/pass@1", "val/pass@1")


def step_values(metrics: dict[str, float], keys: tuple[str, ...] = ()) -> str:
    """``reward/rl_mean 0.605, critique/accuracy 1.000``: the given keys, else every key, in order."""
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in (keys or tuple(metrics)) if k in metrics)


def step_line(step: int, total: int, phase: str, metrics: dict[str, float]) -> str:
    """``step 3/12 [short]: reward/rl_mean 0.605, critique/accuracy 1.000 (2.4 s)``."""
    values = step_values(metrics, STEP_LINE_KEYS)
    return (
        f"step {step}/{total} [{phase}]: {values or 'no rewards'} ({metrics.get('time/step_s', 0.0):.1f} s)"
    )

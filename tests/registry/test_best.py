"""Which value of a metric is better: higher for accuracies and rewards, lower for losses; ties keep the
earlier one (only a strict improvement replaces the best); NaN never wins."""

from __future__ import annotations

import math

import pytest

from crlab.registry.entities import improves, lower_is_better


@pytest.mark.parametrize(
    ("key", "value", "best", "expected"),
    [
        ("eval/pass@1", 0.5, None, True),  # the first value is the best so far
        ("eval/pass@1", 0.6, 0.5, True),  # higher is better for pass@k
        ("eval/pass@1", 0.4, 0.5, False),
        ("eval/pass@1", 0.5, 0.5, False),  # a tie keeps the earlier checkpoint
        ("eval/critique_acc", 0.9, 0.8, True),
        ("train/pg_loss", 0.4, 0.5, True),  # lower is better for a loss
        ("train/pg_loss", 0.6, 0.5, False),
        ("loss", 1.0, 1.0, False),  # a tie, again
        ("eval/pass@1", math.nan, None, False),  # NaN is never a best
        ("eval/pass@1", 0.0, math.nan, True),  # anything beats a NaN
    ],
)  # fmt: skip
def test_improves(key: str, value: float, best: float | None, expected: bool) -> None:
    assert improves(key, value, best) is expected


def test_direction() -> None:
    assert not lower_is_better("eval/pass@1") and not lower_is_better("reward/rl_mean")
    assert lower_is_better("loss") and lower_is_better("actor/pg_loss")
    assert lower_is_better("actor/kl") and lower_is_better("actor/ppo_kl") and lower_is_better("time/step_s")
    assert not lower_is_better("actor/entropy") and not lower_is_better("critique/accuracy")

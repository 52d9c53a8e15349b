"""The plateau monitor's confident rule: its fit worked out by hand, the acceptance rates on synthetic
curves with the tiny experiment's settings, the per-step standard error, ``switch.metric: auto`` and the
config keys."""

from __future__ import annotations

import functools
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from crlab.config import SwitchConfig, load_config
from crlab.config_checks import config_warnings
from crlab.errors import ConfigError
from crlab.sweeps.spec import expand, load_spec
from crlab.train.grpo.phases import PhaseSchedule, PlateauMonitor, weighted_slope
from crlab.train.loop.collect import _stderr

REPO = Path(__file__).resolve().parents[2]
SEEDS = 200
SIGMA = 0.05

# (values, stderrs, slope, its standard error), each worked out by hand (x = 0, 1, 2, ...):
SLOPE_CASES = [
    # a straight line: slope 1, no residuals, no stderrs -> standard error 0
    ([0.0, 1.0, 2.0, 3.0], [None] * 4, 1.0, 0.0),
    # xbar 1.5, Sxx 5, Sxy 1 -> slope 0.2; residuals -.2 .6 -.6 .2: RSS 0.8, s2 = 0.8 / 2 = 0.4 -> sqrt(0.4 / 5)
    ([0.0, 1.0, 0.0, 1.0], [None] * 4, 0.2, math.sqrt(0.08)),
    # the same with stderrs 1: the reduced chi-square 0.4 is below 1, so s2 = 1 -> sqrt(1 / 5)
    ([0.0, 1.0, 0.0, 1.0], [1.0] * 4, 0.2, math.sqrt(0.2)),
    # stderrs 0.1 (weights 100): Sxx 500, chi-square 80 / 2 = 40 above 1 -> sqrt(40 / 500), as unweighted
    ([0.0, 1.0, 0.0, 1.0], [0.1] * 4, 0.2, math.sqrt(0.08)),
    # one stderr missing: equal weights, as without any
    ([0.0, 1.0, 0.0, 1.0], [0.1, None, 0.1, 0.1], 0.2, math.sqrt(0.08)),
    # weights 1, 1, 4: xbar 1.5, ybar 2/3, Sxx 2.25 + .25 + 4 * .25 = 3.5, Sxy 1 + 1/3 + 2/3 = 2 -> slope 4/7;
    # fitted -4/21, 8/21, 20/21, residuals 4/21, -8/21, 1/21: chi-square (16 + 64 + 4) / 441 = 4/21 over 1
    # degree of freedom, below 1 -> s2 = 1: sqrt(1 / 3.5)
    ([0.0, 0.0, 1.0], [1.0, 1.0, 0.5], 4 / 7, math.sqrt(1 / 3.5)),
]


@pytest.mark.parametrize(("values", "stderrs", "slope", "se"), SLOPE_CASES)
def test_weighted_slope_against_hand_worked_values(values, stderrs, slope, se):
    got_slope, got_se = weighted_slope(values, stderrs)
    assert got_slope == pytest.approx(slope, abs=1e-12) and got_se == pytest.approx(se, abs=1e-12)


def test_stderr_of_a_steps_rewards():
    # mean 0.5, Bessel variance 1/3, n 4 -> sqrt(1/12); fewer than 2 samples: NaN
    assert _stderr([0.0, 1.0, 1.0, 0.0]) == pytest.approx(math.sqrt(1 / 12))
    assert math.isnan(_stderr([1.0])) and math.isnan(_stderr([]))


@pytest.mark.parametrize(("stderr", "min_delta"), [(None, 0.01), (0.05, 0.1)])
def test_a_flat_curve_fires_when_the_mean_rule_does(stderr, min_delta):
    # checks start at value max(min_steps 10, 2 * window 8) = 10; fires at 10 + patience 3 - 1 = 12. With
    # stderrs 0.05 the bound is 4 * 1.943 * 0.05 / sqrt(42) = 0.060 (t quantile of 6 df; Sxx of x = 0..7)
    for rule in ("confident", "mean"):
        monitor = PlateauMonitor(window=4, min_delta=min_delta, patience=3, min_steps=10, rule=rule)
        fired = [s for s in range(1, 40) if monitor.update(s, 0.5, stderr=stderr)]
        assert fired == [12], rule
    assert monitor.last_trigger["step"] == 12 and monitor.last_trigger["improvement"] == 0.0


def test_a_flat_curve_with_noise_above_min_delta_never_fires():
    # stderrs 0.05: the bound 0.060 (above) stays over min_delta 0.05: the data cannot say it is flat
    monitor = PlateauMonitor(window=4, min_delta=0.05, patience=3, min_steps=10)
    assert not any(monitor.update(s, 0.5, stderr=0.05) for s in range(1, 100))


@functools.cache
def tiny_switch() -> dict[str, float]:
    sw = load_config(REPO / "experiments/tiny_coder.yaml").switch
    assert sw.rule == "confident" and sw.policy == "plateau"
    return {"window": sw.window, "min_delta": sw.min_delta, "patience": sw.patience, "min_steps": sw.min_steps,
            "confidence": sw.confidence}  # fmt: skip


def first_fire(rule: str, curve: list[float], seed: int) -> int | None:
    monitor, rng = PlateauMonitor(**tiny_switch(), rule=rule), random.Random(seed)
    for step, mean in enumerate(curve, start=1):
        if monitor.update(step, mean + rng.gauss(0.0, SIGMA), stderr=SIGMA):
            return step
    return None


def test_acceptance_a_rising_curve_rarely_fires_and_a_flattened_one_does_by_step_50():
    rising = [0.01 * s for s in range(1, 61)]  # 0.01 a step for 60 steps, noise sd 0.05
    flattening = [0.01 * min(s, 30) for s in range(1, 81)]  # rises for 30 steps, flat after
    confident_rise = sum(first_fire("confident", rising, seed) is not None for seed in range(SEEDS))
    mean_rise = sum(first_fire("mean", rising, seed) is not None for seed in range(SEEDS))
    fires = [first_fire("confident", flattening, seed) for seed in range(SEEDS)]
    by_50 = sum(f is not None and f <= 50 for f in fires)
    assert confident_rise <= 0.05 * SEEDS, confident_rise  # measured: 4 of 200
    assert mean_rise >= 0.8 * SEEDS, mean_rise  # the mean rule, same settings: 179 of 200
    assert by_50 >= 0.9 * SEEDS, by_50  # measured: 191 of 200


def test_confident_state_round_trip_gives_identical_decisions():
    rng = random.Random(5)
    values = [(0.01 * min(s, 30) + rng.gauss(0, SIGMA), SIGMA * (1 + s % 3)) for s in range(1, 90)]
    a = PlateauMonitor(window=6, min_delta=0.05, patience=3, min_steps=12)
    for step, (v, se) in enumerate(values[:20], start=1):
        a.update(step, v, stderr=se)
    b = PlateauMonitor(window=6, min_delta=0.05, patience=3, min_steps=12)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    rest = list(enumerate(values[20:], start=21))
    decisions = [a.update(s, v, stderr=se) for s, (v, se) in rest]
    assert decisions == [b.update(s, v, stderr=se) for s, (v, se) in rest] and any(decisions)
    assert a.state_dict() == b.state_dict() and a.last_trigger["rule"] == "confident"


def test_a_state_saved_before_rules_is_the_mean_rule():
    old = PlateauMonitor(window=4, rule="mean").state_dict()
    del old["config"]["rule"], old["config"]["confidence"], old["stderrs"]
    PlateauMonitor(window=4, rule="mean").load_state_dict(old)
    with pytest.raises(ValueError, match="resume with switch.rule=mean"):
        PlateauMonitor(window=4).load_state_dict(old)


def schedule(has_rl: bool, metric: str = "auto") -> PhaseSchedule:
    phases = [SimpleNamespace(name=n, max_response_length=8, crl_reward_scale=1.0, scale_on="advantages")
              for n in ("a", "b")]  # fmt: skip
    sw = SwitchConfig(policy="plateau", metric=metric, rule="confident", confidence=0.95, window=4,
                      min_delta=0.05, patience=2, min_steps=8)  # fmt: skip
    return PhaseSchedule(phases, sw, has_rl=has_rl)


def test_the_schedule_watches_the_auto_metric_with_its_stderr():
    assert schedule(True).metric == "reward/rl_mean" and schedule(False).metric == "reward/crl_mean"
    assert schedule(False, "reward/rl_mean").metric == "reward/rl_mean"
    wobble = [0.5 + 0.02 * (-1) ** s for s in range(1, 41)]
    # without a stderr the residuals set the noise: flat from the first check (value 8), fires at 9
    sched = schedule(False)
    events = [e for s, v in enumerate(wobble, start=1) if (e := sched.observe(s, {"reward/crl_mean": v}))]
    assert [(e.step, e.metric) for e in events] == [(9, "reward/crl_mean")]
    # a stderr of 1 a step: the bound is far above min_delta, so it never fires
    sched = schedule(False)
    metrics = [{"reward/crl_mean": v, "reward/crl_mean_se": 1.0} for v in wobble]
    assert not any(sched.observe(s, m) for s, m in enumerate(metrics, start=1))


BAD_KEYS = [
    (["switch.rule=median"], r"switch.rule: 'median' is not one of confident, mean"),
    (["switch.confidence=1.0"], r"switch.confidence: 1.0 is outside \[0.5, 1\)"),
    (["switch.window=1"], r"switch.window: 1: the confident rule .* set switch.rule=mean"),
]


@pytest.mark.parametrize(("overrides", "match"), BAD_KEYS)
def test_bad_switch_keys_name_the_key_and_the_fix(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(REPO / "experiments/tiny_coder.yaml", overrides)
    load_config(REPO / "experiments/tiny_coder.yaml", ["switch.window=1", "switch.rule=mean"])  # legal


def test_the_shipped_sweeps_warn_about_nothing():
    from crlab.config import from_dict

    for name in ("crl_ratio", "context_switch"):
        cells = expand(load_spec(REPO / f"sweeps/{name}.yaml"))
        assert [w for c in cells for w in config_warnings(from_dict(c.config))] == [], name


def test_the_t_quantile_is_scipy_stats():
    from scipy import stats

    from crlab.train.grpo.plateau import confident_rule

    for df in (2, 6, 14, 22):  # the confident rule's bound is its slope's one-sided t interval
        window = df // 2 + 1
        values, stderrs = [math.sin(i) for i in range(2 * window)], [None] * (2 * window)
        rise, width = confident_rule(values, stderrs, window, 0.95)
        slope, slope_se = weighted_slope(values, stderrs)
        assert rise == slope * window
        assert width == pytest.approx(stats.t.ppf(0.95, df) * slope_se * window, rel=1e-12)

"""Plateau monitor and phase schedule on synthetic reward curves (steps are 1-based)."""

import json
import random
from types import SimpleNamespace

import pytest

from crlab.config import SwitchConfig
from crlab.train.grpo.phases import PhaseSchedule, PlateauMonitor, SwitchEvent


def first_fire(monitor, values, start=1):
    """Step of the first True from update(), or None."""
    for step, value in enumerate(values, start=start):
        if monitor.update(step, value):
            return step
    return None


def rising(n, slope=0.01, base=0.0):
    return [base + slope * i for i in range(n)]


def noisy_rising(n, slope, sigma, seed):
    rng = random.Random(seed)
    return [slope * i + rng.gauss(0.0, sigma) for i in range(n)]


CURVE_CASES = [
    # flat, window 5, min_steps 10: checks start at value max(10, 2*5) = 10; flat there and at 11, 12
    # -> fires at 10 + patience(3) - 1 = 12
    ("flat-short", [0.5] * 100, dict(window=5, min_steps=10, patience=3), 12),
    # flat with min_steps 20 > 2*window: first check at value 20, fires at 20 + 3 - 1 = 22
    ("flat-long", [0.5] * 100, dict(window=5, min_steps=20, patience=3), 22),
    # rising 0.01 per step: each window-mean gap is 0.01 * 5 = 0.05 >= min_delta 0.01 -> never fires
    ("rising", rising(300), dict(window=5, min_steps=10, patience=3), None),
    # noisy rise, slope 0.005, sigma 0.05, window 20: gap 0.1, its noise sd 0.05*sqrt(2/20) = 0.016
    # -> below 0.01 needs a 5.7-sigma dip: never fires (seeded)
    ("noisy-rising", noisy_rising(400, 0.005, 0.05, seed=0), dict(window=20, min_steps=20, patience=3), None),
    # step: 0.2 for steps 1-11 (flat count 2 by step 11), jump to 0.8 at step 12 resets it; the previous
    # window holds a pre-jump value up to step 20, so flat counts resume at 21 and it fires at 23 (not 12)
    ("step", [0.2] * 11 + [0.8] * 50, dict(window=5, min_steps=10, patience=3), 23),
]


@pytest.mark.parametrize(
    ("name", "values", "kwargs", "expected"), CURVE_CASES, ids=[c[0] for c in CURVE_CASES]
)
def test_plateau_on_curves(name, values, kwargs, expected):
    assert first_fire(PlateauMonitor(min_delta=0.01, rule="mean", **kwargs), values) == expected


def test_noisy_rising_fires_with_too_small_a_window():
    # the same noisy curve with window 2: the gap is 0.01, at min_delta itself -> noise makes it fire,
    # which is why the window must match the noise level
    values = noisy_rising(400, 0.005, 0.05, seed=0)
    assert first_fire(PlateauMonitor(window=2, min_delta=0.01, patience=3, min_steps=4, rule="mean"), values) is not None


def test_rising_then_flat_fires_after_the_flattening():
    # rises 0.01/step for steps 1-60, then flat at 0.6; window 5: fires after step 60, no later than
    # 60 + 2*window (windows fully flat) + patience
    values = rising(60, 0.01, 0.0) + [0.6] * 60
    monitor = PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, rule="mean")
    fired = first_fire(monitor, values)
    assert 60 < fired <= 60 + 10 + 3
    trig = monitor.last_trigger
    assert trig["step"] == fired and trig["improvement"] < 0.01
    assert trig["recent_mean"] == pytest.approx(0.6)


def test_nan_is_ignored_and_fired_is_latched_until_reset():
    # NaN between every value: the 12th real value still fires (NaNs are not counted)
    monitor = PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, rule="mean")
    values = [v for pair in zip([0.5] * 40, [float("nan")] * 40, strict=True) for v in pair]
    assert first_fire(monitor, values) == 23  # value 12 sits at position 2*12 - 1
    # latched: more flat values never fire again
    assert first_fire(monitor, [0.5] * 50, start=100) is None
    monitor.reset()
    assert first_fire(monitor, [0.5] * 50, start=200) == 211


def test_mode_min_on_a_falling_then_flat_loss():
    # falling 0.02/step is improvement in "min" mode -> no fire while falling; flat afterwards fires
    values = [1.0 - 0.02 * i for i in range(30)] + [0.42] * 30
    assert (
        first_fire(PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, mode="min", rule="mean"), values)
        > 30
    )
    # in "max" mode the same falling curve is flat-or-worse from the first check: fires at 12
    assert first_fire(PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, rule="mean"), values) == 12


def test_monitor_state_round_trip_gives_identical_decisions():
    values = rising(40, 0.01) + noisy_rising(80, 0.0, 0.02, seed=3)
    a = PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, rule="mean")
    for step, v in enumerate(values[:45], start=1):
        a.update(step, v)
    b = PlateauMonitor(window=5, min_delta=0.01, patience=3, min_steps=10, rule="mean")
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    rest = list(enumerate(values[45:], start=46))
    assert [a.update(s, v) for s, v in rest] == [b.update(s, v) for s, v in rest]
    assert a.state_dict() == b.state_dict()
    # settings must match the checkpoint
    with pytest.raises(ValueError, match="settings differ"):
        PlateauMonitor(window=6, rule="mean").load_state_dict(a.state_dict())


# ---------------------------------------------------------------- PhaseSchedule


def phases(*names):
    return [
        SimpleNamespace(name=n, max_response_length=16 * (i + 1), crl_reward_scale=0.8, scale_on="advantages")
        for i, n in enumerate(names)
    ]


def switch(policy="plateau", **kw):
    base = dict(
        policy=policy,
        metric="reward/rl_mean",
        rule="mean",
        confidence=0.95,
        window=5,
        min_delta=0.01,
        patience=3,
        min_steps=10,
    )
    base.update(kw)
    return SwitchConfig(**base)


def run(schedule, values, start=1, metric="reward/rl_mean"):
    events = []
    for step, v in enumerate(values, start=start):
        event = schedule.observe(step, {metric: v, "other": 0.0})
        if event is not None:
            events.append(event)
    return events


def test_plateau_schedule_switches_once_on_a_flat_curve():
    sched = PhaseSchedule(phases("short", "long"), switch())
    assert sched.current.name == "short" and sched.index == 0
    events = run(sched, [0.5] * 100)
    # flat: fires at step 12 (see the curve table); the last phase never switches
    assert [(e.step, e.from_phase, e.to_phase) for e in events] == [(12, "short", "long")]
    assert sched.current.max_response_length == 32
    payload = events[0].to_payload()
    assert payload["policy"] == "plateau" and payload["metric"] == "reward/rl_mean"
    assert payload["details"]["recent_mean"] == pytest.approx(0.5)
    json.dumps(payload)


def test_three_phase_plateau_schedule_uses_a_fresh_monitor_per_phase():
    # a fresh monitor waits another 12 values in phase 2: switches at 12 and 12 + 12 = 24
    sched = PhaseSchedule(phases("a", "b", "c"), switch())
    events = run(sched, [0.5] * 100)
    assert [(e.step, e.to_phase) for e in events] == [(12, "b"), (24, "c")]


FIXED_CASES = [
    # two phases, at_steps [5]: switch on the first step >= 5
    (phases("a", "b"), dict(at_steps=[5]), 1, [(5, "b")]),
    # three phases with at_steps [3, 7]
    (phases("a", "b", "c"), dict(at_steps=[3, 7]), 1, [(3, "b"), (7, "c")]),
    # observing starts past the switch step (a resume): switch on the first observed step, one per call
    (phases("a", "b", "c"), dict(at_steps=[3, 7]), 10, [(10, "b"), (11, "c")]),
]


@pytest.mark.parametrize(("phase_list", "kw", "start", "expected"), FIXED_CASES)
def test_fixed_policy(phase_list, kw, start, expected):
    sched = PhaseSchedule(phase_list, switch("fixed", **kw))
    events = run(sched, [0.0] * 20, start=start)
    assert [(e.step, e.to_phase) for e in events] == expected
    assert all(e.policy == "fixed" and e.metric is None for e in events)


def test_never_policy_never_switches_and_needs_no_metric():
    sched = PhaseSchedule(phases("a", "b"), switch("never"))
    assert all(sched.observe(step, {}) is None for step in range(1, 200))
    assert sched.current.name == "a"


BAD_SWITCH_CASES = [
    # unknown policy: names the key and the valid values
    (switch("sometimes"), "switch.policy must be one of plateau, fixed, never"),
    # fixed without a step
    (switch("fixed"), "needs switch.at_steps"),
    # fixed with the wrong number of steps for 3 phases
    (switch("fixed", at_steps=[5]), "3 phases need 2"),
]


@pytest.mark.parametrize(("sw", "message"), BAD_SWITCH_CASES)
def test_bad_switch_config(sw, message):
    with pytest.raises(ValueError, match=message):
        PhaseSchedule(phases("a", "b", "c"), sw)


def test_missing_metric_names_it_and_the_available_keys():
    sched = PhaseSchedule(phases("a", "b"), switch())
    with pytest.raises(KeyError, match=r"reward/rl_mean.*loss.*reward/crl_mean"):
        sched.observe(1, {"loss": 1.0, "reward/crl_mean": 0.5})


def test_schedule_state_round_trip_mid_curve():
    values = rising(30, 0.01) + [0.3] * 60
    a = PhaseSchedule(phases("a", "b", "c"), switch())
    run(a, values[:35])
    b = PhaseSchedule(phases("a", "b", "c"), switch())
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    ea, eb = run(a, values[35:], start=36), run(b, values[35:], start=36)
    assert ea and [e.to_payload() for e in ea] == [e.to_payload() for e in eb]
    assert a.state_dict() == b.state_dict()
    assert isinstance(ea[0], SwitchEvent)

"""Strategies by name: a new advantage estimator, loss aggregation, switch policy or plateau rule is one
decorated function, here in the test, and the real code path (config checks, collection, the loss, the
phase schedule) takes it by its name. Values worked out by hand."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch

from crlab.config import load_config
from crlab.errors import ConfigError
from crlab.train import grpo
from crlab.train.grpo.phases import (
    PLATEAU_RULES,
    SWITCH_POLICIES,
    PhaseSchedule,
    PlateauMonitor,
    PlateauRule,
    SwitchPolicy,
    register_plateau_rule,
    register_switch_policy,
)
from crlab.train.grpo.strategies import (
    ADV_ESTIMATORS,
    LOSS_AGGS,
    AdvEstimator,
    LossAgg,
    estimate_advantages,
    register_adv_est,
    register_loss_agg,
)
from crlab.train.loop import setup
from crlab.train.loop.collect import Sources, collect_groups
from crlab.train.loop.step import PromptRow, micro_weights, pack, score
from crlab.train.rollouts.rollout import Rollouts


@pytest.fixture
def rloo() -> Iterator[str]:
    """RLOO: each reward minus the mean of the others in its group, G / (G - 1) * (r - group mean)."""

    @register_adv_est("rloo")
    def leave_one_out(rewards, group_size, norm_by_std=True, eps=1e-6, single_sample="zero"):  # noqa: ANN001, ANN202
        grouped = rewards.float().view(-1, group_size)  # (n_groups, G)
        return (group_size / (group_size - 1) * (grouped - grouped.mean(dim=1, keepdim=True))).reshape(-1)

    yield "rloo"
    ADV_ESTIMATORS.unregister("rloo")


class _Verdicts:
    """A rollout engine that answers every prompt with the same ``n`` conclusions, in order."""

    def __init__(self, conclusions: str) -> None:
        self.texts = [f"\\conclusion{{{c}}}" for c in conclusions]

    def generate(self, prompts: list[str], n: int, max_new_tokens: int) -> Rollouts:
        k = len(prompts) * n
        texts = [self.texts[i % n] for i in range(k)]
        return Rollouts([[1]] * k, [[2, 3]] * k, [[0.0, 0.0]] * k, texts, [False] * k)


def test_a_registered_estimator_is_a_choice_and_collection_uses_it(rloo: str) -> None:
    keys = ["data.crl_ratio=1.0", "grpo.group_size=4", "grpo.prompts_per_step=1", "grpo.mini_batch_size=1"]
    cfg = load_config(None, [*keys, f"grpo.adv_estimator={rloo}"])  # the config checks read the registry
    rows = [PromptRow("crl", f"judge {i}", f"c{i}", label=True) for i in range(3)]
    scorer = functools.partial(score, sandbox=None, reward_cfg=cfg.reward)
    src = Sources(setup.make_sampler(cfg, 0, len(rows)), [], rows, _Verdicts("TFTT"), scorer)
    phase = cfg.phases[0]
    (rollouts, advantages), kept, stats, examples = collect_groups(src, phase, cfg.grpo, table_rows=2)
    # rewards 1 0 1 1: mean 0.75, times 4/3, then the phase's CRL scale on the advantages
    expected = [4 / 3 * (r - 0.75) * phase.crl_reward_scale for r in (1.0, 0.0, 1.0, 1.0)]
    assert advantages.tolist() == pytest.approx(expected)
    assert kept == [0, 1, 2, 3] and stats["reward/crl_mean"] == 0.75
    assert [row[0] for row in examples] == ["crl"] and examples[0][4] == 1.0  # the first round's table
    grpo_default = grpo.group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 4)
    assert not torch.allclose(grpo_default * phase.crl_reward_scale, advantages)  # the name chose it


@pytest.fixture
def token_sum() -> Iterator[str]:
    @register_loss_agg("token-sum")
    def summed(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum()

    yield "token-sum"
    LOSS_AGGS.unregister("token-sum")


def test_a_registered_aggregation_reduces_the_policy_loss(token_sum: str) -> None:
    assert load_config(None, [f"grpo.loss_agg={token_sum}"]).grpo.loss_agg == token_sum
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    advantages = torch.tensor([0.5, -2.0])
    loss, stats = grpo.policy_loss(logp, logp.clone(), advantages, mask, agg=token_sum)
    # ratio 1: each valid token gives -A; summed: 2 * -0.5 + 1 * 2.0 = 1.0 (token-mean: 1.0 / 3)
    assert float(loss) == pytest.approx(1.0)
    assert float(grpo.policy_loss(logp, logp.clone(), advantages, mask)[0]) == pytest.approx(1.0 / 3)
    assert float(stats["clip_frac"]) == 0.0
    # not registered by_tokens: a micro-batch's share of the mini-batch is its share of the rows
    rollouts = Rollouts([[1], [1], [1]], [[2, 3, 4], [2], [2]], [[0.0] * 3, [0.0], [0.0]], ["", "", ""], [False] * 3)
    packed = pack(rollouts, [0, 1, 2], torch.zeros(3), pad_id=0)
    assert [w for _, w in micro_weights(packed, [[0], [1, 2]], token_sum)] == pytest.approx([1 / 3, 2 / 3])
    assert [w for _, w in micro_weights(packed, [[0], [1, 2]], LossAgg.TOKEN_MEAN)] == pytest.approx([0.6, 0.4])


@pytest.fixture
def above() -> Iterator[str]:
    """Switch once the watched metric reaches 0.9."""

    @register_switch_policy("above")
    def reach(schedule: PhaseSchedule) -> Any:
        def decide(step: int, metrics: Mapping[str, float]) -> tuple[str, dict[str, Any]] | None:
            value = metrics[schedule.metric]
            return (schedule.metric, {"value": value}) if value >= 0.9 else None

        return decide

    yield "above"
    SWITCH_POLICIES.unregister("above")


def test_a_registered_switch_policy_drives_the_schedule(above: str) -> None:
    cfg = load_config(None, [f"switch.policy={above}"])
    schedule = PhaseSchedule(cfg.phases, cfg.switch)
    events = [schedule.observe(step, {"reward/rl_mean": v}) for step, v in enumerate([0.2, 0.95, 0.99], 1)]
    assert events[0] is None and events[2] is None  # the last phase never switches
    assert (events[1].step, events[1].policy, events[1].to_phase, events[1].details) == (2, above, "32k", {"value": 0.95})
    assert json.dumps(schedule.state_dict())  # a decider without state saves none
    again = PhaseSchedule(cfg.phases, cfg.switch)
    assert again.end_of_pass(5, 3).details == {"data_pass_complete": 3}  # a policy that moves: a pass ends a phase
    fresh = load_config(None, [f"switch.policy={above}", "switch.restart=fresh", "grpo.max_steps=null"])
    assert setup.run_steps(fresh, 4) == (8, False)  # its switches are not known ahead: at most a pass a phase


@pytest.fixture
def flat() -> Iterator[str]:
    @register_plateau_rule("flat")
    def always_flat(values: Any, stderrs: Any, window: int, confidence: float) -> tuple[float, float]:
        return 0.0, 0.0

    yield "flat"
    PLATEAU_RULES.unregister("flat")


def test_a_registered_plateau_rule_decides_the_monitor(flat: str) -> None:
    assert load_config(None, [f"switch.rule={flat}"]).switch.rule == flat
    monitor = PlateauMonitor(window=2, min_delta=0.01, patience=2, min_steps=3, rule=flat)
    fired = [monitor.update(step, value) for step, value in enumerate([0.1, 0.5, 0.9, 1.3, 1.7, 2.1], 1)]
    assert fired == [False, False, False, False, True, False]  # rising, yet flat by its rule: fires at 4 + 2 - 1
    assert monitor.last_trigger["rule"] == flat


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        (lambda: grpo.policy_loss(*[torch.zeros(1, 1)] * 2, torch.zeros(1), torch.ones(1, 1), agg="nope"),
         "grpo.loss_agg must be one of token-mean, seq-mean-token-mean, seq-mean-token-sum, got 'nope'"),
        (lambda: estimate_advantages("nope", torch.zeros(2), 2), "grpo.adv_estimator must be one of grpo, got 'nope'"),
        (lambda: PlateauMonitor(rule="nope"), "switch.rule must be one of confident, mean, got 'nope'"),
    ],
)  # fmt: skip
def test_an_unknown_name_lists_the_known_ones(lookup: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lookup()


def test_the_config_refuses_an_unknown_name_and_a_name_twice() -> None:
    with pytest.raises(ConfigError, match="grpo.adv_estimator: 'nope' is not one of grpo"):
        load_config(None, ["grpo.adv_estimator=nope"])
    with pytest.raises(ValueError, match="'token-mean' is already registered"):
        register_loss_agg("token-mean")(lambda values, mask: values.sum())
    # the built-in names, and the defaults, are registered
    assert set(AdvEstimator) <= set(ADV_ESTIMATORS) and set(LossAgg) <= set(LOSS_AGGS)
    assert set(SwitchPolicy) <= set(SWITCH_POLICIES) and set(PlateauRule) <= set(PLATEAU_RULES)


def test_the_config_checks_list_the_names_without_torch() -> None:
    code = "import sys, crlab.config_checks; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

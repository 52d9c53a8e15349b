"""Switches for the authors' rules in the training path: a group of one sample (verl's raw reward),
over-long prompts (filtered as verl's filter_overlong_prompts), the two-pass sandbox, the paper's CRL
prompt in the rows, unlimited DAPO refills (up to one pass over the data). Values worked out by hand."""

from __future__ import annotations

import functools
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from crlab.config import PhaseConfig, load_config
from crlab.errors import ConfigError
from crlab.rewards.code import FallbackRunner
from crlab.train import grpo
from crlab.train.loop import setup
from crlab.train.loop.collect import Sources, collect_groups, refill_limit
from crlab.train.loop.step import PromptRow, Scored, advantages_for, pack, score
from crlab.train.rollouts.rollout import Rollouts

EPS = 1e-6


@pytest.mark.parametrize(
    "single,norm,expected",
    [
        ("zero", True, [0.0, 0.0, 0.0]),
        ("zero", False, [0.0, 0.0, 0.0]),
        # verl: mean 0 and std 1 for a group of one, so (r - 0) / (1 + eps)
        ("raw", True, [0.5 / (1 + EPS), 1.0 / (1 + EPS), 0.0]),
        ("raw", False, [0.5, 1.0, 0.0]),
    ],
)
def test_group_of_one(single: str, norm: bool, expected: list[float]) -> None:
    rewards = torch.tensor([0.5, 1.0, 0.0])
    out = grpo.group_advantages(rewards, 1, norm_by_std=norm, single_sample=single)
    assert out.tolist() == pytest.approx(expected, abs=1e-7)  # float32; eps itself is 5e-7 of 0.5


def test_the_rule_only_touches_groups_of_one() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])  # groups of 2: (1, 0) and (0, 0)
    raw = grpo.group_advantages(rewards, 2, single_sample="raw")
    # (1, 0): mean 0.5, Bessel std sqrt(0.5); (0, 0): no spread, all zero
    half = 0.5 / (math.sqrt(0.5) + EPS)
    assert raw.tolist() == pytest.approx([half, -half, 0.0, 0.0], abs=1e-7)
    assert torch.equal(raw, grpo.group_advantages(rewards, 2))
    with pytest.raises(ValueError, match="single_sample must be one of"):
        grpo.group_advantages(rewards, 2, single_sample="one")


def test_dapo_keeps_groups_of_one_as_verl_does() -> None:
    assert grpo.keep_groups_with_spread(torch.tensor([0.0, 1.0, 1.0]), 1).tolist() == [True, True, True]
    assert grpo.keep_groups_with_spread(torch.tensor([0.0, 1.0, 1.0, 1.0]), 2).tolist() == [True, False]


def test_advantages_for_passes_the_rule_on() -> None:
    scored = Scored(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    phase = PhaseConfig(scale_on="advantages", crl_reward_scale=0.8)
    adv = advantages_for(scored, 1, phase, norm_by_std=False, single_sample="raw")
    assert adv.tolist() == pytest.approx([0.8, 0.0])  # the CRL row's raw reward, scaled as the phase says
    assert advantages_for(scored, 1, phase, norm_by_std=False).tolist() == [0.0, 0.0]


class _WordTokenizer:
    """One token per word; no chat template, so the prompt goes in as it is."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": list(range(len(text.split())))}


def _rows(kind: str, *lengths: int) -> list[PromptRow]:
    return [PromptRow(kind, " ".join(["w"] * n), f"{kind}{i}") for i, n in enumerate(lengths)]


def test_overlong_prompts_are_filtered_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(None, ["data.overlong_prompts=filter", "data.max_prompt_length=5"])
    rl, crl = _rows("rl", 3, 5, 6), _rows("crl", 7, 5)
    with caplog.at_level(logging.WARNING, logger="crlab.train.loop.setup"):
        kept_rl, kept_crl = setup.filter_overlong(cfg, _WordTokenizer(), rl, crl)
    assert [r.problem_id for r in kept_rl] == ["rl0", "rl1"]  # 5 tokens fit: only longer ones go
    assert [r.problem_id for r in kept_crl] == ["crl1"]
    assert "dropped 1 of 3 RL and 1 of 2 CRL rows" in caplog.text
    assert "data.max_prompt_length=5" in caplog.text
    keep = load_config(None, ["data.max_prompt_length=5"])
    assert setup.filter_overlong(keep, _WordTokenizer(), rl, crl) == (rl, crl)  # the default keeps them


def test_filtering_every_row_of_a_kind_is_an_error() -> None:
    cfg = load_config(None, ["data.overlong_prompts=filter", "data.max_prompt_length=2"])
    with pytest.raises(ConfigError, match="data.max_prompt_length: every RL prompt is over 2 tokens"):
        setup.filter_overlong(cfg, _WordTokenizer(), _rows("rl", 3), [])


class _FakeSandbox:
    def __init__(self, workers, time_limit_s, memory_mb, isolation) -> None:  # noqa: ANN001
        self.time_limit_s, self.entered = time_limit_s, False

    def __enter__(self) -> _FakeSandbox:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered = False


def test_make_sandbox_builds_the_two_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    import crlab.rewards.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "Sandbox", _FakeSandbox)
    single = setup.make_sandbox(load_config(None, ["reward.sandbox_workers=1"]))
    assert isinstance(single, _FakeSandbox) and not single.entered and single.time_limit_s == 6.0  # its owner enters it
    # (the preset's reward.harness: authors makes both passes inside one sandbox: test_authors_harness.py)
    overrides = ["recipe=authors", "reward.harness=strict", "reward.sandbox_workers=1"]
    both = setup.make_sandbox(load_config(None, overrides))
    assert isinstance(both, FallbackRunner)
    assert (both.fast.time_limit_s, both.slow.time_limit_s) == (5.0, 20.0)
    with both:
        assert both.fast.entered and both.slow.entered
    assert not both.fast.entered and not both.slow.entered


def test_make_rows_writes_the_paper_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    import crlab.data.crl as crl_module

    seen = {}

    def fake_build(problems, sandbox, **kwargs):  # noqa: ANN001, ANN202
        seen.update(kwargs)
        return [crl_module.CRLRow("p", "Q", "S", True, 1.0, "prompt")]

    monkeypatch.setattr(crl_module, "build_crl_rows", fake_build)
    problem = SimpleNamespace(id="p", question="Q", spec=None, starter_code="", candidates=())
    cfg = load_config(None, ["data.crl_prompt=paper"])
    monkeypatch.setattr("crlab.data.prompts.code_prompt", lambda p, style: "code prompt")
    rl, crl = setup.make_rows(cfg, [problem], [problem], sandbox=None, style="tiny")
    assert seen["template"] == "paper" and seen["style"] == "tiny"
    assert [r.kind for r in rl + crl] == ["rl", "crl"]


class _Sampler:
    def __init__(self) -> None:
        self.draws = 0

    def next_batch(self) -> SimpleNamespace:
        self.draws += 1
        return SimpleNamespace(rl=[], crl=[0, 1])


class _SameVerdict:
    """Every response concludes T: each group's rewards are all equal, so DAPO keeps none and refills."""

    def generate(self, prompts: list[str], n: int, max_new_tokens: int) -> Rollouts:
        k = len(prompts) * n
        return Rollouts([[1]] * k, [[2]] * k, [[0.0]] * k, ["\\conclusion{T}"] * k, [False] * k)


@pytest.mark.parametrize(
    "rounds,n_rows,draws", [("3", 9, 4), ("null", 9, 5), ("null", 10, 5), ("null", 2, 1)]
)
def test_refills_unlimited_up_to_one_pass_over_the_data(rounds: str, n_rows: int, draws: int) -> None:
    keys = ["grpo.group_size=2", "grpo.prompts_per_step=2", "grpo.mini_batch_size=2"]
    cfg = load_config(None, [*keys, f"grpo.max_refill_rounds={rounds}"])
    rows = [PromptRow("crl", "judge", f"c{i}", label=True) for i in range(n_rows)]
    sampler = _Sampler()
    src = Sources(sampler, [], rows, _SameVerdict(), functools.partial(score, sandbox=None, reward_cfg=cfg.reward))
    phase = PhaseConfig(max_response_length=8, scale_on="advantages", crl_reward_scale=1.0)
    _, kept, stats, _ = collect_groups(src, phase, cfg.grpo, cfg.tracking.rollout_table_rows)
    assert (sampler.draws, kept) == (draws, [])  # ceil(n_rows / 2) draws at most when unlimited
    assert stats["batch/refill_rounds"] == draws - 1
    assert refill_limit(cfg.grpo, n_rows) == draws - 1


def test_the_eos_can_be_left_out_of_the_loss() -> None:
    # prompt [5, 6]; a finished response [7, 8, EOS=2] and a truncated one [7, 8, 9]
    rollouts = Rollouts([[5, 6], [5, 6]], [[7, 8, 2], [7, 8, 9]], [[0.0] * 3] * 2, ["", ""], [False, True])
    adv = torch.tensor([1.0, -1.0])
    # position t predicts token t + 1: positions 1, 2, 3 predict 7, 8 and the last token
    assert pack(rollouts, [0, 1], adv, pad_id=0).mask.tolist() == [[0, 1, 1, 1]] * 2
    no_eos = pack(rollouts, [0, 1], adv, pad_id=0, train_eos=False).mask.tolist()
    assert no_eos == [[0, 1, 1, 0], [0, 1, 1, 1]]  # a truncated response has no EOS to leave out

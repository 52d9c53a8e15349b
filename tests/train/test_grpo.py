"""Table-driven tests of the GRPO maths; every expected value is worked out by hand in the case's comment."""

import math

import pytest
import torch

from crlab.train import grpo

LN = math.log

# ---------------------------------------------------------------- group_advantages

ADVANTAGE_CASES = [
    # all-equal group: std 0, so (r - mean) = 0 everywhere and 0 / (0 + eps) = 0
    ([1.0, 1.0, 1.0, 1.0], 4, True, [0.0, 0.0, 0.0, 0.0]),
    # two-sample group [0, 1]: mean 0.5, sample std sqrt((0.25 + 0.25) / 1) = 0.70711 -> -+0.5/0.70711
    ([0.0, 1.0], 2, True, [-0.70711, 0.70711]),
    # [0, 0, 1, 1]: mean 0.5, sample var (4 * 0.25) / 3 = 1/3, std 0.57735 -> -+0.5/0.57735 = -+0.86603
    ([0.0, 0.0, 1.0, 1.0], 4, True, [-0.86603, -0.86603, 0.86603, 0.86603]),
    # two groups [0, 1] and [1, 1]: the first as above, the second all-equal -> zeros
    ([0.0, 1.0, 1.0, 1.0], 2, True, [-0.70711, 0.70711, 0.0, 0.0]),
    # std-norm off: groups [1, 2, 3] (mean 2) and [0, 0, 3] (mean 1) -> r - mean
    ([1.0, 2.0, 3.0, 0.0, 0.0, 3.0], 3, False, [-1.0, 0.0, 1.0, -1.0, -1.0, 2.0]),
    # group of one: no spread, advantage 0 (not nan)
    ([0.7, 0.2], 1, True, [0.0, 0.0]),
]


@pytest.mark.parametrize(("rewards", "group_size", "norm", "expected"), ADVANTAGE_CASES)
def test_group_advantages(rewards, group_size, norm, expected):
    out = grpo.group_advantages(torch.tensor(rewards), group_size, norm_by_std=norm)
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-4, rtol=0)


def test_group_advantages_rejects_ragged_length():
    # 5 rewards cannot form groups of 2: the message names both numbers
    with pytest.raises(ValueError, match=r"length 5.*group_size 2"):
        grpo.group_advantages(torch.zeros(5), 2)


# ---------------------------------------------------------------- policy_loss: clipping, one token each

CLIP_CASES = [
    # A=+1, ratio 1.5: -1.5 vs -1*1.3 = -1.3 -> max is -1.3, clipped (high side)
    (1.0, 1.5, -1.3, 1.0),
    # A=+1, ratio 0.5: -0.5 vs -1*0.8 = -0.8 -> max is -0.5, not clipped (low side never clips A>0)
    (1.0, 0.5, -0.5, 0.0),
    # A=-1, ratio 0.5: 0.5 vs 0.8 -> 0.8, clipped (low side)
    (-1.0, 0.5, 0.8, 1.0),
    # A=-1, ratio 1.5: 1.5 vs 1.3 -> 1.5, not clipped (high side never clips A<0)
    (-1.0, 1.5, 1.5, 0.0),
    # A=+1, ratio 1.1 inside [0.8, 1.3]: -1.1 both ways
    (1.0, 1.1, -1.1, 0.0),
    # A=-2, ratio 0.7: 1.4 vs -2*0.8 = -1.6 -> 1.6, clipped
    (-2.0, 0.7, 1.6, 1.0),
    # A=+2, ratio 1.25: inside, -2.5 (the asymmetric high clip 0.3 lets 1.25 through; symmetric 0.2 would not)
    (2.0, 1.25, -2.5, 0.0),
]


@pytest.mark.parametrize(("adv", "ratio", "expected_loss", "expected_clip"), CLIP_CASES)
def test_policy_loss_clipping(adv, ratio, expected_loss, expected_clip):
    old = torch.zeros(1, 1)
    logp = old + LN(ratio)
    loss, stats = grpo.policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(expected_loss, abs=1e-5)
    assert stats["clip_frac"].item() == pytest.approx(expected_clip)
    assert stats["ratio_mean"].item() == pytest.approx(ratio, abs=1e-5)


# dual-clip (verl's clip_ratio_c = 3): for A < 0 the per-token loss is min(max(...), -A*c)
DUAL_CASES = [
    # A=-1, ratio 5: PPO gives max(5, 1.3) = 5; dual bound -A*3 = 3 -> 3, caught by the bound
    (-1.0, 5.0, 3.0, 1.0),
    # A=-1, ratio 2: max(2, 1.3) = 2 < 3 -> 2, the bound is not active
    (-1.0, 2.0, 2.0, 0.0),
    # A=-2, ratio 4: max(8, 2.6) = 8; bound 6 -> 6
    (-2.0, 4.0, 6.0, 1.0),
    # A=+1, ratio 5: positive advantages are never dual-clipped: max(-5, -1.3) = -1.3
    (1.0, 5.0, -1.3, 0.0),
    # A=-1, ratio 0.5: the low clip as before: max(0.5, 0.8) = 0.8 < 3
    (-1.0, 0.5, 0.8, 0.0),
]


@pytest.mark.parametrize(("adv", "ratio", "expected_loss", "expected_dual"), DUAL_CASES)
def test_policy_loss_dual_clip(adv, ratio, expected_loss, expected_dual):
    old = torch.zeros(1, 1)
    logp = (old + LN(ratio)).requires_grad_(True)
    loss, stats = grpo.policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), dual_clip_c=3.0)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-5)
    assert stats["dual_clip_frac"].item() == pytest.approx(expected_dual)
    loss.backward()
    if expected_dual:  # a token held at the bound gives no gradient
        assert logp.grad.abs().item() == 0.0
    with pytest.raises(ValueError, match="dual_clip_c must be > 1"):
        grpo.policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), dual_clip_c=1.0)


def test_policy_loss_clipped_tokens_have_no_gradient():
    # token 0: A=+1, ratio 1.5 -> clipped, d/dlogp = 0; token 1: ratio 1 -> d/dlogp of -A*ratio = -1 / 2 tokens
    old = torch.zeros(1, 2)
    logp = torch.tensor([[LN(1.5), 0.0]], requires_grad=True)
    loss, _ = grpo.policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.5]]))


def test_policy_loss_stats_kl():
    # ratio 2 on one token: k3 KL(old||new) = ratio - 1 - ln ratio = 1 - 0.69315 = 0.30685
    old = torch.zeros(1, 1)
    _, stats = grpo.policy_loss(old + LN(2.0), old, torch.tensor([0.0]), torch.ones(1, 1))
    assert stats["approx_kl"].item() == pytest.approx(0.30685, abs=1e-5)


# ---------------------------------------------------------------- aggregation with unequal lengths

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 1e9, 1e9]])  # the 1e9 sit under mask zeros
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # lengths 3 and 1

AGG_CASES = [
    # token-mean: (1 + 2 + 3 + 4) / 4 tokens = 2.5
    ("token-mean", 2.5),
    # seq-mean-token-mean: mean(6/3, 4/1) = mean(2, 4) = 3
    ("seq-mean-token-mean", 3.0),
    # seq-mean-token-sum: mean(6, 4) = 5
    ("seq-mean-token-sum", 5.0),
]


@pytest.mark.parametrize(("agg", "expected"), AGG_CASES)
def test_aggregate_modes(agg, expected):
    assert grpo.aggregate(VALUES, MASK, agg).item() == pytest.approx(expected)


POLICY_AGG_CASES = [
    # ratio 1 everywhere, so each token's loss is -A: row 0 (A=1, 3 tokens) -1 each; row 1 (A=-2, 1 token) 2
    # token-mean: (-1 - 1 - 1 + 2) / 4 = -0.25
    ("token-mean", -0.25),
    # seq-mean-token-mean: mean(-3/3, 2/1) = mean(-1, 2) = 0.5
    ("seq-mean-token-mean", 0.5),
    # seq-mean-token-sum: mean(-3, 2) = -0.5
    ("seq-mean-token-sum", -0.5),
]


@pytest.mark.parametrize(("agg", "expected"), POLICY_AGG_CASES)
def test_policy_loss_agg_modes(agg, expected):
    logp = torch.full((2, 3), -1.0)
    loss, _ = grpo.policy_loss(logp, logp.clone(), torch.tensor([1.0, -2.0]), MASK, agg=agg)
    assert loss.item() == pytest.approx(expected)


MASK_CASES = [
    # a fully masked row is left out of the sequence means: only row 0 counts -> mean 2 / sum 6
    ("seq-mean-token-mean", torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), 2.0),
    ("seq-mean-token-sum", torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), 6.0),
    # an all-zero mask gives 0, not nan
    ("token-mean", torch.zeros(2, 3), 0.0),
    ("seq-mean-token-mean", torch.zeros(2, 3), 0.0),
    # bool masks work like float ones: (1 + 4) / 2 = 2.5
    ("token-mean", torch.tensor([[True, False, False], [True, False, False]]), 2.5),
]


@pytest.mark.parametrize(("agg", "mask", "expected"), MASK_CASES)
def test_aggregate_mask_zeros(agg, mask, expected):
    assert grpo.aggregate(VALUES, mask, agg).item() == pytest.approx(expected)


def test_unknown_agg_lists_valid_modes():
    with pytest.raises(ValueError, match="token-mean, seq-mean-token-mean, seq-mean-token-sum"):
        grpo.policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), agg="sum")


# ---------------------------------------------------------------- kl, entropy, log-probs

KL_CASES = [
    # equal log-probs: exp(0) - 0 - 1 = 0
    ([[-1.0, -2.0]], [[-1.0, -2.0]], [[1.0, 1.0]], [[0.0, 0.0]]),
    # ref - logp = ln 2: 2 - 0.69315 - 1 = 0.30685; second token masked -> 0
    ([[0.0, 0.0]], [[LN(2.0), LN(2.0)]], [[1.0, 0.0]], [[0.30685, 0.0]]),
    # ref - logp = -ln 2: 0.5 + 0.69315 - 1 = 0.19315
    ([[LN(2.0)]], [[0.0]], [[1.0]], [[0.19315]]),
]


@pytest.mark.parametrize(("logp", "ref", "mask", "expected"), KL_CASES)
def test_kl_penalty(logp, ref, mask, expected):
    out = grpo.kl_penalty(torch.tensor(logp), torch.tensor(ref), torch.tensor(mask))
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=0)


ENTROPY_CASES = [
    # uniform over V=7 -> log 7 = 1.94591
    (torch.zeros(1, 1, 7), math.log(7)),
    # logits [0, ln 3]: p = [0.25, 0.75], H = 0.25*ln4 + 0.75*ln(4/3) = 0.34657 + 0.21576 = 0.56233
    (torch.tensor([[[0.0, LN(3.0)]]]), 0.56233),
    # near one-hot with huge logits: H ~ 0 and finite (logsumexp keeps it stable)
    (torch.tensor([[[1000.0, 0.0, 0.0]]]), 0.0),
]


@pytest.mark.parametrize(("logits", "expected"), ENTROPY_CASES)
def test_entropy_from_logits(logits, expected):
    out = grpo.entropy_from_logits(logits)
    assert out.shape == logits.shape[:2]
    assert out.item() == pytest.approx(expected, abs=1e-4)


def test_token_logprobs_by_hand_and_against_log_softmax():
    # logits [0, ln 3], id 1 -> log 0.75 = -0.28768
    out = grpo.token_logprobs(torch.tensor([[[0.0, LN(3.0)]]]), torch.tensor([[1]]))
    assert out.item() == pytest.approx(-0.28768, abs=1e-5)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen)
    ids = torch.randint(0, 11, (3, 5), generator=gen)
    want = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(grpo.token_logprobs(logits, ids), want)
    # bf16 logits are upcast row by row: close to the float32 answer on the bf16-rounded logits
    low = logits.to(torch.bfloat16)
    want_low = torch.log_softmax(low.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(grpo.token_logprobs(low, ids), want_low)


# ---------------------------------------------------------------- dynamic sampling


def test_keep_groups_with_spread_and_refill_helpers():
    # groups [1, 1] (no spread), [0, 1] (spread), [0.5, 0.5] (none)
    keep = grpo.keep_groups_with_spread(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5]), 2)
    assert keep.tolist() == [False, True, False]
    mask = torch.tensor([False, True, True, False, True])
    # the first two kept groups are 1 and 2
    assert grpo.select_groups(mask, 2).tolist() == [1, 2]
    # asking for more than are kept returns all kept ones; the trainer refills the rest
    assert grpo.select_groups(mask, 5).tolist() == [1, 2, 4]
    # groups 1 and 3 of size 2 are rows 2, 3 and 6, 7
    assert grpo.group_rows(torch.tensor([1, 3]), 2).tolist() == [2, 3, 6, 7]


# ---------------------------------------------------------------- the CRL scale


def test_reward_scale_cancels_under_std_norm_but_not_on_advantages():
    # batch: one RL group [0, 1, 1, 0] and one CRL group [1, 0, 0, 0], group size 4
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    is_crl = torch.tensor([False] * 4 + [True] * 4)
    base = grpo.group_advantages(rewards, 4, eps=0.0)
    # scaling the CRL rewards by 0.8 before normalisation: mean and std of that group scale by 0.8 too,
    # so (0.8 r - 0.8 m) / (0.8 s) = (r - m) / s -- exactly the same advantages (eps = 0)
    scaled_rewards = torch.where(is_crl, rewards * 0.8, rewards)
    torch.testing.assert_close(grpo.group_advantages(scaled_rewards, 4, eps=0.0), base)
    # with the default eps the difference is only eps-sized
    torch.testing.assert_close(
        grpo.group_advantages(scaled_rewards, 4), grpo.group_advantages(rewards, 4), atol=1e-5, rtol=0
    )
    # acting on the advantages does weigh CRL rows by 0.8 and leaves RL rows alone
    out = grpo.scale_advantages(base, is_crl, 0.8)
    torch.testing.assert_close(out[:4], base[:4])
    torch.testing.assert_close(out[4:], base[4:] * 0.8)
    assert not torch.allclose(out, base)
    # with std-norm off the reward scale does not cancel: r - mean scales linearly
    off = grpo.group_advantages(scaled_rewards, 4, norm_by_std=False)
    torch.testing.assert_close(off[4:], grpo.group_advantages(rewards, 4, norm_by_std=False)[4:] * 0.8)

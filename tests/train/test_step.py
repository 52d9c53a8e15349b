"""Micro-batches of rows of similar length: how rows are split, and that the split leaves the loss alone."""

from __future__ import annotations

import pytest
import torch

from crlab.config import GRPOConfig
from crlab.train.loop import step
from crlab.train.loop.step import fill_logprobs, micro_batches, micro_loss, micro_weights, pack
from crlab.train.rollouts.rollout import Rollouts


@pytest.mark.parametrize(
    ("lengths", "max_rows", "expected"),
    [
        ([10, 10, 10], 8, [[0, 1, 2]]),  # equal lengths: one forward
        ([300, 10, 10, 10], 8, [[0], [1, 2, 3]]),  # one long row goes alone (saves 870 padded tokens)
        ([12, 10, 11, 9], 8, [[0, 2, 1, 3]]),  # small differences: one forward, longest first
        ([10] * 5, 2, [[0, 1], [2, 3], [4]]),  # at most max_rows per forward
        ([50, 40], 8, [[0, 1]]),  # 10 padded tokens cost less than another forward
    ],
)
def test_micro_batches(lengths: list[int], max_rows: int, expected: list[list[int]]) -> None:
    assert micro_batches(lengths, range(len(lengths)), max_rows) == expected


def test_micro_batches_cover_a_mini_batch_once() -> None:
    lengths = [7, 90, 31, 88, 5, 64, 12, 40, 95, 3]
    chunks = micro_batches(lengths, range(2, 9), 3)
    assert sorted(i for rows in chunks for i in rows) == list(range(2, 9))
    assert all(1 <= len(rows) <= 3 for rows in chunks)
    assert all(lengths[a] >= lengths[b] for rows in chunks for a, b in zip(rows, rows[1:], strict=False))


def _Cfg(agg: str) -> GRPOConfig:  # noqa: N802
    return GRPOConfig(loss_agg=agg, clip_low=0.2, clip_high=0.3, kl_coef=0.0, entropy_coef=0.0, dual_clip_c=None)


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
    )  # fmt: skip
    return Qwen3ForCausalLM(cfg)


def _packed():  # noqa: ANN202
    g = torch.Generator().manual_seed(1)
    sizes = [(3, 40), (5, 2), (4, 6), (2, 3), (6, 35), (3, 4)]  # (prompt, response) tokens per row
    prompts = [torch.randint(3, 64, (p,), generator=g).tolist() for p, _ in sizes]
    responses = [torch.randint(3, 64, (r,), generator=g).tolist() for _, r in sizes]
    rollouts = Rollouts(prompts, responses, [[0.0] * len(r) for r in responses], [""] * 6, [False] * 6)
    advantages = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.7, 0.2])
    return pack(rollouts, list(range(6)), advantages, pad_id=0)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_the_split_leaves_the_loss_and_its_gradient_alone(model, agg: str) -> None:  # noqa: ANN001
    """One full-width forward of the mini-batch vs micro-batches of similar length, each trimmed."""
    results = []
    for chunks in ([[0, 1, 2, 3, 4, 5]], micro_batches(_packed().lengths(), range(6), 4)):
        packed = _packed()
        with torch.no_grad():
            fill_logprobs(model, packed, 1.0, [[0, 1, 2, 3, 4, 5]])  # the same old log-probs in both arms
            packed.old_logp = packed.old_logp - 0.05 * torch.arange(packed.old_logp.shape[1])  # ratios != 1
        model.zero_grad()
        parts = micro_weights(packed, chunks, agg) if len(chunks) > 1 else [(packed, 1.0)]
        loss = sum(micro_loss(model, p, weight=w, grpo_cfg=_Cfg(agg), temperature=1.0)[0] for p, w in parts)
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()], len(parts)))
    (full, full_grads, one), (split, split_grads, many) = results
    assert one == 1 and many > 1  # the long rows went apart from the short ones
    assert split == pytest.approx(full, rel=1e-5)
    assert all(
        torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(full_grads, split_grads, strict=True)
    )


def test_verl_micro_weights_are_row_shares_of_each_micro_batch_mean() -> None:
    """Rows 0 and 4 have 40 and 35 response tokens, the rest 2-6 (15 in all): by tokens the long micro-batch weighs
    75/90 of the update, as verl weighs it 2/6 (its rows), its own token mean inside."""
    packed = _packed()
    chunks = [[0, 4], [1, 2, 3, 5]]
    tokens = [float(packed.select(c).mask.sum()) for c in chunks]
    assert tokens == [75.0, 15.0]
    exact = [w for _, w in micro_weights(packed, chunks, "token-mean")]
    verl = [w for _, w in micro_weights(packed, chunks, "token-mean", "verl")]
    assert exact == pytest.approx([75 / 90, 15 / 90]) and verl == pytest.approx([2 / 6, 4 / 6])
    seq = [w for _, w in micro_weights(packed, chunks, "seq-mean-token-mean", "verl")]
    assert seq == [w for _, w in micro_weights(packed, chunks, "seq-mean-token-mean")]  # rows either way


def test_fill_logprobs_by_chunks_matches_one_forward(model) -> None:  # noqa: ANN001
    whole, split = _packed(), _packed()
    with torch.no_grad():
        fill_logprobs(model, whole, 0.7, [[0, 1, 2, 3, 4, 5]])
        fill_logprobs(model, split, 0.7, micro_batches(split.lengths(), range(6), 4))
    mask = whole.mask.bool()
    assert torch.allclose(whole.old_logp[mask], split.old_logp[mask], atol=1e-5)
    assert split.ref_logp is None and step.FORWARD_COST_TOKENS > 0


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum"])
def test_one_update_a_step_skips_the_old_log_prob_pass_with_the_same_loss_and_gradient(model, agg: str) -> None:  # noqa: ANN001
    """``on_policy``: no forward before the update; the update's own log-probs, detached, stand for the old
    ones, so the loss and its gradient are those of a separate pass (equal up to float rounding)."""
    results = []
    for on_policy in (False, True):
        packed = _packed()
        with torch.no_grad():
            fill_logprobs(model, packed, 0.7, [[0, 1, 2, 3, 4, 5]], on_policy=on_policy)
        assert (packed.old_logp is None) == on_policy
        model.zero_grad()
        loss, stats = micro_loss(model, packed, weight=1.0, grpo_cfg=_Cfg(agg), temperature=0.7)
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    (sep, sep_grads), (own, own_grads) = results
    assert own == pytest.approx(sep, rel=1e-5, abs=1e-7)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(sep_grads, own_grads, strict=True))
    assert any(float(g.abs().sum()) > 0 for g in own_grads)  # a real gradient, not zero in both arms
    with torch.no_grad():  # a reference model still needs its pass
        packed = _packed()
        fill_logprobs(model, packed, 0.7, [[0, 1, 2, 3, 4, 5]], ref=model, on_policy=True)
    assert packed.old_logp is not None and packed.ref_logp is not None


def test_rollout_logprob_gap_is_over_the_trained_response_tokens_only() -> None:
    """Worked by hand: two samples (prompt 2 tokens; responses of 2 and 1 tokens, the first ending in EOS 9).
    With train_eos=False the EOS is out of the loss, so only |(-1.0) - (-1.5)| and |(-2.0) - (-2.0)| count."""
    from crlab.train.loop.step import pack, rollout_logprob_gap

    rollouts = Rollouts(
        prompt_ids=[[5, 6], [5, 6]], response_ids=[[7, 9], [8]], logprobs=[[-1.5, -0.3], [-2.0]],
        texts=["a", "b"], truncated=[False, True],
    )  # fmt: skip
    packed = pack(rollouts, [0, 1], torch.zeros(2), pad_id=0, train_eos=False)
    packed.old_logp = torch.tensor([[0.0, -1.0, -7.0], [0.0, -2.0, 0.0]])  # (B, L-1): position 1 predicts token 2
    total, count = rollout_logprob_gap(rollouts, [0, 1], packed)
    assert (round(total, 6), count) == (0.5, 2)
    packed = pack(rollouts, [0, 1], torch.zeros(2), pad_id=0, train_eos=True)  # the EOS in the loss: |-7 + 0.3|
    packed.old_logp = torch.tensor([[0.0, -1.0, -7.0], [0.0, -2.0, 0.0]])
    total, count = rollout_logprob_gap(rollouts, [0, 1], packed)
    assert (round(total, 6), count) == (7.2, 3)

"""Rollouts: the KV-cache sampler (lean Qwen3 and transformers decoders) on CPU; vLLM's sleep mode on GPU (`gpu`);
vLLM on CPU is in test_vllm.py."""

from __future__ import annotations

import math

import pytest
import torch

from crlab.train.rollouts.qwen3_decode import Qwen3Decoder
from crlab.train.rollouts.rollout import HFRollout, Rollouts, _strip_after_eos, render_prompt
from crlab.train.rollouts.sampling import HFDecoder, draw, make_decoder, sample


class _Tok:
    """A character-level stand-in tokenizer (ids 3..258 are bytes; 2 is EOS, 0 is PAD)."""

    eos_token_id, pad_token_id, chat_template = 2, 0, None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [3 + b for b in text.encode()]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode(errors="replace")


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128)  # fmt: skip
    return Qwen3ForCausalLM(cfg).eval()


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([5, 6, 2, 7, 2], ([5, 6, 2], False)),  # cut after the first EOS, which is kept
        ([5, 6, 7], ([5, 6, 7], True)),  # no EOS: truncated
        ([2], ([2], False)),  # EOS first: an empty answer, not truncated
    ],
)
def test_strip_after_eos(ids: list[int], expected: tuple[list[int], bool]) -> None:
    assert _strip_after_eos(ids, {2}) == expected


def test_hf_rollout_groups_and_logprobs(model) -> None:  # noqa: ANN001
    torch.manual_seed(1)
    rollout = HFRollout(model, _Tok(), temperature=1.0, top_p=1.0, top_k=0, batch_size=2)
    out = rollout.generate(["ab", "cde", "f"], n=3, max_new_tokens=7)
    assert isinstance(out, Rollouts) and len(out) == 9
    assert out.prompt_ids[:3] == [[3 + ord("a"), 3 + ord("b")]] * 3  # grouped: sample i answers prompt i // n
    assert out.prompt_ids[6] == [3 + ord("f")]
    for ids, lps, truncated in zip(out.response_ids, out.logprobs, out.truncated, strict=True):
        assert 1 <= len(ids) <= 7 and len(lps) == len(ids)
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in lps)
        assert truncated == (2 not in ids)
    assert model.training is False


def test_hf_rollout_logprobs_match_a_forward_pass(model) -> None:  # noqa: ANN001
    """At temperature 1 with no top-k/top-p, the sampling log-probs are the model's own log-probs."""
    torch.manual_seed(2)
    rollout = HFRollout(model, _Tok(), temperature=1.0, top_p=1.0, top_k=0)
    out = rollout.generate(["xyz"], n=2, max_new_tokens=5)
    for prompt, response, lps in zip(out.prompt_ids, out.response_ids, out.logprobs, strict=True):
        seq = torch.tensor([prompt + response])
        logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]  # (R, V)
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(lps), expected, atol=1e-4)


def _left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # (P, L)
    return ids, (ids != 0).long()


def test_draw_follows_the_distribution_and_skips_zero_probabilities() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    torch.manual_seed(3)
    tokens = draw(probs.repeat(20000, 1))[:, 0].view(20000, 2)  # (draws, row)
    counts = torch.stack([torch.bincount(tokens[:, r], minlength=6) for r in range(2)]).float() / 20000
    assert torch.allclose(counts, probs, atol=0.015)
    assert (counts[probs == 0] == 0).all()  # never a zero-probability token, not even the last one
    torch.manual_seed(3)
    assert torch.equal(draw(probs.repeat(20000, 1))[:, 0].view(20000, 2), tokens)  # same seed, same draws


@pytest.mark.parametrize("decoder", [Qwen3Decoder, HFDecoder])
def test_decoders_give_the_logits_of_a_full_forward(model, decoder) -> None:  # noqa: ANN001
    """Left-padded prefill, n copies per prompt, one step, a dropped row, another step: each row's logits
    are those of the model run on that row's tokens alone."""
    prompts = [[40, 41, 42, 43, 44, 45], [50, 51], [60, 61, 62, 63]]
    ids, attention = _left_padded(prompts)

    def expected(tokens: list[int]) -> torch.Tensor:
        return model(input_ids=torch.tensor([tokens])).logits[0, -1]

    with torch.no_grad():
        dec = decoder(model)
        logits = dec.prefill(ids, attention, 2, 4)  # (6, V)
        assert all(torch.allclose(logits[r], expected(prompts[r // 2]), atol=1e-5) for r in range(6))
        logits = dec.step(torch.arange(6)[:, None] + 7)  # row r feeds token 7 + r
        assert all(
            torch.allclose(logits[r], expected(prompts[r // 2] + [7 + r]), atol=1e-5) for r in range(6)
        )
        kept = [0, 2, 3, 5]
        dec.keep(torch.tensor(kept))
        logits = dec.step(torch.full((4, 1), 9))
        for i, r in enumerate(kept):
            assert torch.allclose(logits[i], expected(prompts[r // 2] + [7 + r, 9]), atol=1e-5)
    assert isinstance(make_decoder(model), Qwen3Decoder)  # a plain Qwen3 model takes the lean path


def test_sample_greedy_matches_generate_with_padding_and_early_stops(model) -> None:  # noqa: ANN001
    """Left padding, a shared prefill and rows leaving the batch at EOS give generate's own greedy tokens."""
    ids, attention = _left_padded([[40, 41, 42, 43, 44, 45], [50, 51], [60, 61, 62, 63]])

    def generate(eos: int) -> torch.Tensor:
        out = model.generate(input_ids=ids, attention_mask=attention, do_sample=False, max_new_tokens=10,
                             eos_token_id=eos, pad_token_id=0)  # fmt: skip
        return out[:, ids.shape[1] :]

    eos = int(generate(259)[1, 3])  # a token that the second prompt reaches at step 4: its row stops early
    expected = generate(eos)
    tokens, logprobs = sample(model, ids, attention, 1, 10, temperature=0.0, top_p=1.0, top_k=0,
                              eos_ids={eos}, pad_id=0)  # fmt: skip
    assert torch.equal(tokens, expected)
    stopped = (tokens == eos).cumsum(-1) - (tokens == eos).long()  # 1 after a row's first EOS
    assert (logprobs[stopped > 0] == 0).all() and (logprobs[stopped == 0] <= 0).all()


def test_sample_is_reproducible_and_groups_rows(model) -> None:  # noqa: ANN001
    ids, attention = _left_padded([[40, 41, 42], [50]])
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(sample(model, ids, attention, 3, 12, temperature=0.8, top_p=0.9, top_k=20,
                           eos_ids={2, 7}, pad_id=0))  # fmt: skip
    (tokens, logprobs), (again, again_lp) = runs
    assert tokens.shape == (6, tokens.shape[1]) and tokens.shape[1] <= 12
    assert torch.equal(tokens, again) and torch.equal(logprobs, again_lp)
    assert torch.isfinite(logprobs).all()


def test_render_prompt_uses_the_chat_template_when_there_is_one() -> None:
    class Chat(_Tok):
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):  # noqa: ANN001, ANN201
            return f"<user>{messages[0]['content']}</user><assistant>" if add_generation_prompt else ""

    assert render_prompt(_Tok(), "hi") == "hi"
    assert render_prompt(Chat(), "hi") == "<user>hi</user><assistant>"


@pytest.mark.gpu
@pytest.mark.vllm
def test_vllm_on_gpu_sleeps_wakes_and_takes_new_weights() -> None:
    """vLLM colocated on a GPU, in sleep mode: sample, sleep (as before an update), push all-zero weights
    (which wakes it), sample again: every token equally likely."""
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crlab.train.rollouts.vllm_rollout import VLLMRollout, VLLMSettings
    from crlab.train.tiny.model import TINY_URI, resolve_model_path

    path = resolve_model_path(TINY_URI)
    tok = AutoTokenizer.from_pretrained(path)
    settings = VLLMSettings(dtype="float32", gpu_memory_utilization=0.3, max_model_len=512, sleep_mode=True)
    rollout = VLLMRollout(str(path), tok, temperature=1.0, top_p=1.0, top_k=0, settings=settings)
    try:
        assert rollout.sleep_mode  # CUDA has it
        out = rollout.generate(["Solve in Python (stdin to stdout).\nRead a string. Print it reversed.\n"], 4, 48)
        assert len(out) == 4 and all(
            len(lp) == len(ids) for lp, ids in zip(out.logprobs, out.response_ids, strict=True)
        )
        model = AutoModelForCausalLM.from_pretrained(path)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        free = torch.cuda.mem_get_info()[0]
        rollout.sleep()
        assert torch.cuda.mem_get_info()[0] > free  # the KV cache and weights left the GPU
        rollout.sync_weights(model)
        zeroed = rollout.generate(["hello"], 2, 8)
        uniform = -math.log(model.config.vocab_size)  # all-zero weights: every token equally likely
        assert all(abs(lp - uniform) < 1e-3 for lps in zeroed.logprobs for lp in lps)
    finally:
        rollout.close()


def test_weights_go_to_vllm_one_whole_decoder_layer_at_a_time() -> None:
    """The push's groups (vllm_rollout.layer_groups): every parameter once; one group per
    decoder layer, so the parts of a fused projection (q/k/v, gate/up) always arrive together."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from crlab.train.rollouts.vllm_rollout import layer_groups, pushed_weights

    cfg = Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8)  # fmt: skip
    model = Qwen3ForCausalLM(cfg)
    groups = [[name for name, _ in group] for group in layer_groups(model)]
    flat = [name for group in groups for name in group]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters()) and len(set(flat)) == len(flat)
    assert len(groups) == 3 and groups[0][0] == "model.embed_tokens.weight" and "model.norm.weight" in groups[0]
    for i, group in enumerate(groups[1:]):
        assert all(name.startswith(f"model.layers.{i}.") for name in group)
        parts = {name.split(".")[-2] for name in group}
        assert {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"} <= parts
    pushed = dict(pushed_weights(model))  # not partitioned: the parameters themselves, detached
    assert pushed.keys() == dict(model.named_parameters()).keys()
    assert all(not t.requires_grad for t in pushed.values())


def test_vllm_with_tensor_parallel_is_refused_before_any_model_loads() -> None:
    from crlab.config import load_config
    from crlab.errors import ConfigError
    from crlab.train.loop.setup import check_rollout

    cfg = load_config(None, ["rollout.engine=vllm", "rollout.tensor_parallel_size=2"])
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel_size=2: .*use 1"):
        check_rollout(cfg)
    check_rollout(load_config(None, ["rollout.engine=vllm"]))  # 1: fine

"""Rollouts: HF generate on CPU with a tiny random model; vLLM on GPU (marked `gpu`)."""

from __future__ import annotations

import math

import pytest
import torch

from crlab.train.rollout import HFRollout, Rollouts, _strip_after_eos, render_prompt


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


def test_render_prompt_uses_the_chat_template_when_there_is_one() -> None:
    class Chat(_Tok):
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):  # noqa: ANN001, ANN201
            return f"<user>{messages[0]['content']}</user><assistant>" if add_generation_prompt else ""

    assert render_prompt(_Tok(), "hi") == "hi"
    assert render_prompt(Chat(), "hi") == "<user>hi</user><assistant>"


@pytest.mark.gpu
def test_vllm_rollout_generates_and_takes_new_weights() -> None:
    """vLLM colocated: sample, push changed weights, sample again (needs CUDA and the gpu extra)."""
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crlab.train.rollout import VLLMRollout
    from crlab.train.tiny_model import TINY_URI, resolve_model_path

    path = resolve_model_path(TINY_URI)
    tok = AutoTokenizer.from_pretrained(path)
    rollout = VLLMRollout(str(path), tok, temperature=1.0, top_p=1.0, top_k=0, dtype="float32",
                          gpu_memory_utilization=0.3, tensor_parallel_size=1, max_model_len=512,
                          sleep_mode=True, seed=0)  # fmt: skip
    out = rollout.generate(["Solve in Python (stdin to stdout).\nRead a string. Print it reversed.\n"], 4, 48)
    assert len(out) == 4 and all(
        len(lp) == len(ids) for lp, ids in zip(out.logprobs, out.response_ids, strict=True)
    )
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rollout.sleep()
    rollout.sync_weights(model)
    zeroed = rollout.generate(["hello"], 2, 8)
    uniform = -math.log(model.config.vocab_size)  # all-zero weights: every token equally likely
    assert all(abs(lp - uniform) < 1e-3 for lps in zeroed.logprobs for lp in lps)

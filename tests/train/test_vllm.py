"""The vLLM rollout engine, on the real engine (the CPU build in CI: .ci/vllm.sh): its sampled log-probs against
transformers' recomputation at the training sampling settings, before and after a weight push; greedy n > 1.

One engine (the tiny coder, float32, eager) is shared by the tests of this file; a test that changes its
weights puts the shipped ones back. The trainer and `platform eval` paths are in test_vllm_run.py.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.vllm

PROMPTS = [
    "Solve in Python (stdin to stdout).\nRead a string. Print it reversed.\n",
    "Solve in Python (stdin to stdout).\nRead two integers. Print their sum.\n",
]
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}  # the paper's (the config's defaults)


@pytest.fixture(scope="module")
def tiny() -> tuple[str, object]:
    from transformers import AutoTokenizer

    from crlab.train.tiny.model import TINY_URI, resolve_model_path

    path = str(resolve_model_path(TINY_URI))
    return path, AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def engine(tiny):  # noqa: ANN001, ANN201
    from crlab.train.rollouts.vllm_rollout import VLLMRollout, VLLMSettings

    path, tok = tiny
    settings = VLLMSettings(dtype="float32", max_model_len=100_000, enforce_eager=True, seed=0)
    rollout = VLLMRollout(path, tok, **SAMPLING, settings=settings)
    yield rollout
    rollout.close()


def hf_model(path: str):  # noqa: ANN201
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def recomputed(model, out, temperature: float, top_p: float, top_k: int) -> list[list[float]]:  # noqa: ANN001
    """Each sampled token's log-prob under ``model`` after transformers' own temperature, top-k and top-p
    warpers (the order generate() applies them), renormalised."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)]
    found = []
    for prompt, ids in zip(out.prompt_ids, out.response_ids, strict=True):
        seq = torch.tensor([prompt + ids])  # (1, P+R)
        logits = model(seq).logits[0, len(prompt) - 1 : -1]  # (R, V): position t predicts token t+1
        for warp in warpers:
            logits = warp(seq, logits)
        logp = torch.log_softmax(logits, dim=-1)  # (R, V)
        found.append(logp.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist())
    return found


def max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


def test_sampled_logprobs_match_transformers_at_training_settings(engine, tiny) -> None:  # noqa: ANN001
    path, tok = tiny
    out = engine.generate(PROMPTS, 4, 48)
    assert len(out) == 8 and engine.max_model_len == 640  # capped at the model's max_position_embeddings
    for ids, lps, text, cut in zip(out.response_ids, out.logprobs, out.texts, out.truncated, strict=True):
        assert len(lps) == len(ids) > 0
        assert text == tok.decode(ids, skip_special_tokens=True)
        assert cut or ids[-1] == tok.eos_token_id  # ends with EOS unless cut at max_new_tokens
    assert out.prompt_ids[0] == out.prompt_ids[3] != out.prompt_ids[4]  # grouped by prompt
    assert len({tuple(ids) for ids in out.response_ids}) > 2  # sampled, not one answer repeated
    gap = max_gap(out.logprobs, recomputed(hf_model(path), out, **SAMPLING))
    assert gap < 1e-4, gap


def test_pushed_weights_are_the_ones_sampled_from(engine, tiny) -> None:  # noqa: ANN001
    path, _ = tiny
    model = hf_model(path)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    try:
        engine.sync_weights(model)
        out = engine.generate(PROMPTS, 4, 48)
        gap = max_gap(out.logprobs, recomputed(model, out, **SAMPLING))
        assert gap < 1e-4, gap
        before = max_gap(out.logprobs, recomputed(hf_model(path), out, **SAMPLING))
        assert before > 1e-2, before  # the perturbation is visible: the engine did not keep the old weights
    finally:
        model.load_state_dict(base)
        engine.sync_weights(model)


def test_greedy_with_several_samples_sends_the_prompt_n_times(engine, tiny) -> None:  # noqa: ANN001
    path, _ = tiny
    out = engine.generate(PROMPTS[:1], 3, 24, temperature=0.0, top_p=1.0, top_k=0)
    assert len(out) == 3 and out.response_ids[0] == out.response_ids[1] == out.response_ids[2]
    model = hf_model(path)
    with torch.no_grad():  # greedy: each token is the argmax of transformers' logits
        seq = torch.tensor([out.prompt_ids[0] + out.response_ids[0]])
        logits = model(seq).logits[0, len(out.prompt_ids[0]) - 1 : -1]
    assert logits.argmax(-1).tolist() == out.response_ids[0]


def test_sleep_mode_is_off_where_vllm_has_none(engine) -> None:  # noqa: ANN001
    from crlab.train.rollouts.vllm_rollout import sleep_mode_available

    if sleep_mode_available():
        pytest.skip("this platform has sleep mode (the gpu test covers it)")
    engine.sleep()  # a no-op here, as the trainer calls it before every update
    assert not engine.sleep_mode and len(engine.generate(PROMPTS[:1], 1, 4)) == 1

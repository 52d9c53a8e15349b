"""Rollouts: sample responses to prompts with the current policy.

``HFRollout`` samples from a transformers model in its own KV-cache loop (CPU, or small GPU runs);
``VLLMRollout`` (:mod:`crlab.train.rollouts.vllm_rollout`) uses vLLM colocated with the trainer: weights are pushed
into vLLM after each update and, where vLLM has it, vLLM sleeps (frees its KV cache and weights) while the
trainer updates. Both return token ids, the sampling policy's log-probs of the sampled tokens and the
decoded texts, and both have ``sync_weights(model)``, ``sleep()``, ``wake()`` and ``close()``.

Prompts are the user message's text; a tokenizer with a chat template gets it applied (generation
prompt added), one without gets the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from crlab.train.rollouts import sampling


@dataclass
class Rollouts:
    """``n`` samples per prompt, grouped contiguously: sample ``i`` answers prompt ``i // n``."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # ends with EOS unless truncated
    logprobs: list[list[float]]  # the sampling distribution's log-prob of each response token
    texts: list[str]
    truncated: list[bool]

    def __len__(self) -> int:
        return len(self.texts)


def render_prompt(tokenizer: Any, prompt: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def _strip_after_eos(ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1], False
    return ids, True


class HFRollout:
    """Sampling from a transformers model with a KV cache (:func:`crlab.train.rollouts.sampling.sample`: each
    prompt encoded once, finished rows leave the batch); ``batch_size`` prompts (times ``n``) per batch.
    ``synced``: every rank decodes in step with the others (ZeRO-3 on several ranks); then every rank must
    call :meth:`generate` with as many prompts."""

    samples_from_trainer = True  # the trainer's own module: with one update a step, no old-log-prob pass

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        temperature: float,
        top_p: float,
        top_k: int,
        batch_size: int = 16,
        synced: bool = False,
    ) -> None:
        self.model, self.tokenizer, self.synced = model, tokenizer, synced
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.batch_size = batch_size
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        )

    def sync_weights(self, model: Any) -> None:
        """The HF path samples from the training model itself: nothing to copy."""
        self.model = model

    def sleep(self) -> None:
        """Nothing to free: the sampler is the training model."""

    def wake(self) -> None:
        """Nothing to restore."""

    def close(self) -> None:
        """Nothing to end."""

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, max_new_tokens: int, **overrides: Any) -> Rollouts:
        """``n`` samples per prompt; ``overrides`` (temperature, top_p, top_k) overrides the rollout's own
        settings for this call (an evaluation samples greedily from the training policy)."""
        out = Rollouts([], [], [], [], [])
        settings = sampling_settings(self, overrides)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(prompts), self.batch_size):
                self._generate_batch(prompts[start : start + self.batch_size], n, max_new_tokens, out, settings)
        finally:
            self.model.train(was_training)
        return out

    def _generate_batch(
        self, prompts: list[str], n: int, max_new_tokens: int, out: Rollouts, settings: dict[str, Any]
    ) -> None:
        tok = self.tokenizer
        encoded = [tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[self.pad_id] * (width - len(ids)) + ids for ids in encoded])  # (P, L)
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])  # (P, L)
        device = next(self.model.parameters()).device
        sequences, chosen = sampling.sample(
            self.model, input_ids.to(device), attention.to(device), n, max_new_tokens,
            **settings, eos_ids=self.eos_ids, pad_id=self.pad_id, synced=self.synced,
        )  # fmt: skip  # (P*n, R) each
        append_samples(out, encoded, sequences, chosen, n, self.eos_ids, tok)


def sampling_settings(rollout: Any, override: dict[str, Any]) -> dict[str, Any]:
    """The rollout's temperature, top_p and top_k, with ``override``'s non-None values in their place."""
    unknown = set(override) - {"temperature", "top_p", "top_k"}
    if unknown:
        raise TypeError(f"generate: unknown sampling settings {sorted(unknown)}")
    base = {"temperature": rollout.temperature, "top_p": rollout.top_p, "top_k": rollout.top_k}
    return {k: (v if override.get(k) is None else override[k]) for k, v in base.items()}


def append_samples(
    out: Rollouts, encoded: list[list[int]], sequences: torch.Tensor, chosen: torch.Tensor, n: int,
    eos_ids: Any, tok: Any,
) -> None:  # fmt: skip
    """Append sampled rows to ``out``: ``sequences`` and ``chosen`` (their log-probs) are (P*n, R), row
    ``i`` from prompt ``encoded[i // n]``; each response is cut after its first end-of-sequence token."""
    for row in range(sequences.shape[0]):
        ids, truncated = _strip_after_eos(sequences[row].tolist(), eos_ids)
        out.prompt_ids.append(encoded[row // n])
        out.response_ids.append(ids)
        out.logprobs.append(chosen[row, : len(ids)].tolist())
        out.texts.append(tok.decode(ids, skip_special_tokens=True))
        out.truncated.append(truncated)

"""Batched sampling with a KV cache, for :class:`~crlab.train.rollouts.rollout.HFRollout`.

What it does that ``model.generate(num_return_sequences=n)`` does not, on a small model where each
decoding step costs about what its ops' Python and dispatch cost:

- the prompts are encoded once (a prefill of P rows), then the cache is repeated ``n`` times, rather than
  encoding each prompt ``n`` times;
- a row that has sampled EOS leaves the batch (its cache rows are dropped), so the later steps decode only
  the rows still running, rather than padding finished rows up to the longest one;
- a plain Qwen3 model (the tiny coder, Qwen3-4B/8B) decodes through :mod:`crlab.train.rollouts.qwen3_decode`, the
  same computation in fewer, fused ops (a quarter of the Python calls per step); any other model through
  its own forward and transformers' cache (:class:`HFDecoder`).

The distribution is ``generate``'s: the logits in float32, then temperature, top-k and top-p (transformers'
own warpers, in that order) and softmax; a token is drawn from it by :func:`draw` (``argmax`` at temperature
0). The tokens drawn differ from ``generate``'s for the same seed (other random numbers), and the same seed
gives the same tokens.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from crlab.train.engine import dist
from crlab.train.rollouts import qwen3_decode


def _warpers(temperature: float, top_p: float, top_k: int) -> list[Any]:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if temperature <= 0:
        return []  # greedy: the raw logits
    out: list[Any] = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        out.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p))
    return out


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (b, V), drawn by inverting the row's CDF with one uniform number.

    Exact up to the float rounding of the cumulative sum, and never a zero-probability token: the target
    ``(1 - u) * total`` lies in ``(0, total]``, and the first index whose cumulative sum reaches it has a
    positive probability. On CPU it costs a tenth of ``torch.multinomial`` (which the tiny coder paid for
    at every decoding step). Uses the global torch generator.
    """
    cdf = probs.cumsum(-1)  # (b, V)
    target = (1.0 - torch.rand((probs.shape[0], 1), device=probs.device, dtype=cdf.dtype)) * cdf[:, -1:]
    return torch.searchsorted(cdf, target)  # (b, 1)


class HFDecoder:
    """Decoding through the model's own forward and transformers' KV cache (any causal LM)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5 / 4.x

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs = {**self.extra, self.cache_arg: self.cache}
        out = self.model(input_ids=ids, attention_mask=self.attention, position_ids=positions, use_cache=True,
                         **kwargs)  # fmt: skip
        if self.cache is None:
            self.cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        return out.logits[:, -1].float()  # (b, V)

    def prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        self.cache, self.attention = None, attention
        logits = self._forward(input_ids, (attention.cumsum(-1) - 1).clamp(min=0))  # (P, V)
        self.cache.batch_repeat_interleave(n)
        self.attention = attention.repeat_interleave(n, dim=0)  # (B, L)
        self.next_pos = self.attention.sum(-1, keepdim=True)  # (B, 1)
        return logits.repeat_interleave(n, dim=0)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attention = torch.cat([self.attention, self.attention.new_ones((tokens.shape[0], 1))], dim=-1)
        logits = self._forward(tokens, self.next_pos)
        self.next_pos = self.next_pos + 1
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention, self.next_pos = self.attention[rows], self.next_pos[rows]


def make_decoder(model: Any) -> Any:
    """The lean Qwen3 decoder where it applies (:mod:`crlab.train.rollouts.qwen3_decode`), else transformers'."""
    return qwen3_decode.Qwen3Decoder(model) if qwen3_decode.supports(model) else HFDecoder(model)


@torch.no_grad()
def sample(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, n: int, max_new_tokens: int, *,
    temperature: float, top_p: float, top_k: int, eos_ids: set[int], pad_id: int, synced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``n`` samples per left-padded prompt (``input_ids``, ``attention``: (P, L)), grouped contiguously.

    Returns (tokens (P*n, R), log-probs (P*n, R)) with R <= ``max_new_tokens``: each row's tokens up to and
    including its first EOS, then ``pad_id`` (log-prob 0); the log-probs are those of the distribution
    sampled from (after temperature, top-k and top-p).

    ``synced`` (ZeRO-3 on several ranks, where every forward gathers parameters from all ranks, as
    transformers' ``generate(synced_gpus=True)``): every rank keeps decoding until all ranks are done; a
    rank whose rows have all finished decodes one dummy row whose tokens are dropped.
    """
    warpers = _warpers(temperature, top_p, top_k)
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    decoder = make_decoder(model)
    logits = decoder.prefill(input_ids, attention, n, max_new_tokens)  # (B, V)
    rows = torch.arange(logits.shape[0])  # the output rows of the decoder's rows; -1: a dummy row
    tokens = torch.full((logits.shape[0], max_new_tokens), pad_id, dtype=torch.long)  # (B, R)
    logprobs = torch.zeros((logits.shape[0], max_new_tokens))  # (B, R)
    steps = 0
    for t in range(max_new_tokens):
        for warp in warpers:
            logits = warp(None, logits)
        chosen = draw(logits.softmax(-1)) if temperature > 0 else logits.argmax(-1, keepdim=True)  # (b, 1)
        real = rows >= 0  # (b,)
        if bool(real.any()):
            steps = t + 1
            tokens[rows[real], t] = chosen[real.to(chosen.device), 0].cpu()
            chosen_lp = logits.log_softmax(-1).gather(-1, chosen)[:, 0].float().cpu()  # (b,)
            logprobs[rows[real], t] = chosen_lp[real]
        running = ~torch.isin(chosen[:, 0], eos) & real.to(chosen.device)  # (b,)
        done = t + 1 == max_new_tokens or not bool(running.any())
        if synced:
            done = dist.all_reduce(float(done), "min") == 1.0  # every rank is done
        if done:
            break
        if not bool(running.all()):
            keep = running.nonzero()[:, 0]
            if len(keep) == 0:  # this rank is done, another is not: a dummy row keeps the forwards in step
                keep, rows = keep.new_zeros(1), torch.tensor([-1])
            else:
                rows = rows[keep.cpu()]
            decoder.keep(keep)
            chosen = chosen[keep]
        logits = decoder.step(chosen)
    return tokens[:, :steps], logprobs[:, :steps]

"""Log-probs (and entropy) of chosen tokens without the full-vocabulary logits in memory.

A forward of a causal LM ends with ``logits = lm_head(hidden)``: (B, L, V) values, 9.6 GB in fp32 for 16k
tokens and a 150k vocabulary, and as much again for each fp32 softmax or its gradient. GRPO needs only the
log-prob of each target token (and, for the metric or an entropy bonus, each position's entropy), so here
the LM head is applied chunk by chunk over the tokens: a chunk's logits (fp32, divided by the sampling
temperature) give its log-sum-exp, its target logit and its entropy, and are dropped before the next chunk.
The backward (:class:`_HeadLogprobs`, a custom autograd function) recomputes each chunk's logits and
accumulates the gradients of the hidden states and of the head's weight, so no step ever holds more than
one chunk of ``CHUNK_ELEMENTS`` logits (a few of them in fp32: the logits, the softmax, its gradient).

Only the positions a mask selects (the response tokens) go through the head: the others get 0.

How the head is reached (:func:`model_logprobs`): the model's own forward runs as usual, with its output
embedding's ``forward`` replaced for that call by the chunked computation (a Hugging Face causal LM calls
``self.lm_head(hidden_states)`` once per forward). So every module is still called through its hooks,
once per forward, which ZeRO-3 relies on: it gathers the head's weight for the call and again for its
backward, as for any module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

# Logits per chunk (tokens x vocabulary): 2**25 fp32 values are 128 MiB; a chunk holds about 3 such tensors
# at its peak. With a 152k vocabulary (Qwen3) a chunk is 220 tokens.
CHUNK_ELEMENTS = 2**25


def chunk_tokens(vocab: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Tokens per chunk for a vocabulary of ``vocab``: ``elements // vocab``, at least 1."""
    return max(1, elements // max(1, vocab))


def _scaled_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """(c, H) hidden states -> (c, V) logits in fp32 (fp64 for fp64 weights), times ``scale`` (1 / T)."""
    logits = F.linear(hidden, weight, bias).to(_acc_dtype(weight))  # (c, V)
    return logits.mul_(scale) if scale != 1.0 else logits


def _acc_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


class _HeadLogprobs(torch.autograd.Function):
    """(log-prob of each target (N,), entropy at each position (N,)) from hidden states (N, H) and the head.

    The entropy is differentiable only when ``entropy_grad`` is true (an entropy term in the loss); without
    ``entropy`` it is not computed (zeros)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        targets: torch.Tensor, scale: float, chunk: int, entropy: bool, entropy_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        n = hidden.shape[0]
        logp = torch.zeros(n, dtype=_acc_dtype(weight), device=hidden.device)  # (N,)
        ent = torch.zeros_like(logp)  # (N,)
        for lo in range(0, n, chunk):
            s = _scaled_logits(hidden[lo : lo + chunk], weight, bias, scale)  # (c, V)
            lse = torch.logsumexp(s, dim=-1)  # (c,)
            logp[lo : lo + chunk] = s.gather(-1, targets[lo : lo + chunk, None])[:, 0] - lse
            if entropy:
                p = (s - lse[:, None]).exp_()  # (c, V) the softmax
                ent[lo : lo + chunk] = lse - p.mul_(s).sum(-1)  # H = lse - sum(p * s)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.scale, ctx.chunk, ctx.entropy_grad = scale, chunk, entropy_grad
        if not entropy_grad:
            ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor, g_ent: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        hidden, weight, bias, targets = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(hidden) if need_h else None  # (N, H)
        grad_w = torch.zeros_like(weight) if need_w else None  # (V, H)
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None  # (V,)
        use_ent = ctx.entropy_grad and g_ent is not None
        for lo in range(0, hidden.shape[0], ctx.chunk):
            h, sl = hidden[lo : lo + ctx.chunk], slice(lo, lo + ctx.chunk)
            s = _scaled_logits(h, weight, bias, ctx.scale)  # (c, V)
            p = (s - torch.logsumexp(s, dim=-1, keepdim=True)).exp_()  # (c, V)
            if use_ent:  # dH/ds = -p * (s - sum(p * s))
                mean_s = (p * s).sum(-1, keepdim=True)  # (c, 1)
                s.sub_(mean_s).mul_(p).mul_(g_ent[sl, None])  # s now holds g_ent * p * (s - E[s])
            grad_s = p.mul_(-g_logp[sl, None])  # d logp/ds = onehot - p
            grad_s.scatter_add_(-1, targets[sl, None], g_logp[sl, None])
            if use_ent:
                grad_s.sub_(s)
            del s
            grad_z = (grad_s.mul_(ctx.scale) if ctx.scale != 1.0 else grad_s).to(weight.dtype)  # (c, V)
            if grad_h is not None:
                grad_h[sl] = grad_z @ weight
            if grad_w is not None:
                grad_w.addmm_(grad_z.T, h)
            if grad_b is not None:
                grad_b += grad_z.sum(0)
        return grad_h, grad_w, grad_b, None, None, None, None, None


def head_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, *, entropy: bool = False, entropy_grad: bool = False, chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Log-probs of ``targets`` (N,) and entropies (N,) under ``softmax((hidden @ weight.T + bias) / T)``
    for hidden states (N, H), chunk by chunk (``chunk`` tokens, default :func:`chunk_tokens`); fp32 out.
    ``temperature`` <= 0 means 1 (no scaling), as the sampler's greedy decoding."""
    scale = 1.0 / temperature if temperature > 0 else 1.0
    size = chunk or chunk_tokens(weight.shape[0])
    return _HeadLogprobs.apply(hidden, weight, bias, targets.long(), scale, size, entropy, entropy_grad)


@contextlib.contextmanager
def _head_replaced(head: torch.nn.Module, forward: Any) -> Iterator[None]:
    """``head.forward`` is ``forward`` inside the block (an instance attribute, so hooks still run)."""
    had = "forward" in head.__dict__
    old = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if had:
            head.forward = old
        else:
            del head.forward


def output_head(model: Any) -> torch.nn.Module | None:
    """The LM head (``get_output_embeddings()``) of ``model`` or of the module a DeepSpeed engine wraps."""
    inner = getattr(model, "module", model)
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Linear) else None


def model_logprobs(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
    temperature: float, *, entropy: bool = False, entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(log-probs (B, L-1), entropies (B, L-1)) of ``targets`` (B, L-1) after ``input_ids`` (B, L), at the
    positions where ``mask`` (B, L-1) is set (0 elsewhere), by one forward of ``model`` whose LM head works
    chunk by chunk (:func:`head_logprobs`). A model without a linear output embedding gets the full logits."""
    where = mask.bool()  # (B, L-1)
    head = output_head(model)
    if head is None:
        return _full_logprobs(model, input_ids, attention, targets, where, temperature, entropy)

    def forward(hidden: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (M, 2): log-prob, entropy
        picked = hidden[:, :-1][where]  # (M, H) the positions that predict a masked-in target
        logp, ent = head_logprobs(
            picked, head.weight, head.bias, targets[where], temperature, entropy=entropy,
            entropy_grad=entropy_grad,
        )  # fmt: skip
        return torch.stack([logp, ent], dim=-1)

    with _head_replaced(head, forward):
        out = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits  # (M, 2)
    logp = torch.zeros(where.shape, dtype=out.dtype, device=out.device).masked_scatter(where, out[:, 0])
    ent = torch.zeros(where.shape, dtype=out.dtype, device=out.device).masked_scatter(where, out[:, 1])
    return logp, ent  # (B, L-1) each


def _full_logprobs(
    model: Any, input_ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor, where: torch.Tensor,
    temperature: float, entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The fallback: the model's full logits (B, L-1, V), then the same quantities row by row."""
    from crlab.train import grpo

    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, :-1, :]
    if temperature > 0:
        logits = logits / temperature
    logp = grpo.token_logprobs(logits, targets) * where  # (B, L-1)
    ent = grpo.entropy_from_logits(logits) * where if entropy else torch.zeros_like(logp)
    return logp, ent

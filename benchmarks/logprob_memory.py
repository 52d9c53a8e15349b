"""Extra memory of a log-prob pass: the chunked LM head against the full-vocabulary logits, on CPU.

A one-layer Qwen3 model with a small hidden size (64) and a large vocabulary (150,000 by default), so that
the logits are nearly all the memory there is. Two passes, each in a fresh process (peak resident memory,
``ru_maxrss``, after minus before the pass):

- ``logprob``: the pre-update log-prob pass (no gradient);
- ``update``: a forward with the entropy (for the metric) and a backward of the log-probs.

Two ways: ``full``, the full logits (B, L, V), then the log-softmax gather and the entropy over them (what
the trainer did before: :func:`crlab.train.grpo.token_logprobs`, :func:`crlab.train.grpo.entropy_from_logits`),
the baseline, run at ``--baseline-tokens`` only (at 16k tokens its logits alone are 9 GiB); and
``chunked`` (:func:`crlab.train.grpo.logprobs.model_logprobs`), at the same tokens and at ``--tokens``.

    python benchmarks/logprob_memory.py [--tokens 16384] [--baseline-tokens 2048] [--vocab 150000]

Prints a table (GiB of extra memory, seconds) and the ratio full / chunked at the baseline's tokens.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _model(vocab: int, tokens: int):  # noqa: ANN202
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=tokens,
    )  # fmt: skip
    return Qwen3ForCausalLM(cfg)


def _pass(model, ids, way: str, grad: bool) -> None:  # noqa: ANN001
    import torch

    from crlab.train import grpo
    from crlab.train.grpo.logprobs import model_logprobs

    targets, mask = ids[:, 1:], torch.ones(ids.shape[0], ids.shape[1] - 1)
    with torch.set_grad_enabled(grad):
        if way == "full":
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1] / 0.6  # (B, L-1, V)
            logp = grpo.token_logprobs(logits, targets)
            entropy = grpo.entropy_from_logits(logits) if grad else None
        else:
            logp, entropy = model_logprobs(model, ids, torch.ones_like(ids), targets, mask, 0.6, entropy=grad)
        if grad:
            logp.sum().backward()
            assert entropy is not None and bool(torch.isfinite(entropy).all())


def measure(way: str, tokens: int, vocab: int, grad: bool) -> dict[str, float]:
    """One pass in this process: extra peak resident memory (bytes) and seconds."""
    import torch

    model = _model(vocab, tokens)
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    _pass(model, ids[:, :32], way, grad)  # allocators and kernels warm
    model.zero_grad(set_to_none=False)  # the gradients' own memory is not the pass's
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    _pass(model, ids, way, grad)
    seconds = time.perf_counter() - start
    return {"bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024.0, "s": seconds}


def _child(way: str, tokens: int, vocab: int, grad: bool) -> dict[str, float]:
    args = [sys.executable, __file__, "--child", way, "--tokens", str(tokens), "--vocab", str(vocab)]
    done = subprocess.run([*args, *(["--grad"] if grad else [])], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--baseline-tokens", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=150_000)
    ap.add_argument("--grad", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.tokens, args.vocab, args.grad)))
        return 0
    gib = 1024**3
    print(f"vocabulary {args.vocab:,}, hidden 64; extra peak resident memory of one pass, in a fresh process")
    print(f"{'pass':<9}{'way':<9}{'tokens':>8}{'GiB':>9}{'s':>8}{'full/chunked':>14}")
    for name, grad in (("logprob", False), ("update", True)):
        base = _child("full", args.baseline_tokens, args.vocab, grad)
        rows = [("full", args.baseline_tokens, base)]
        rows += [
            ("chunked", n, _child("chunked", n, args.vocab, grad))
            for n in (args.baseline_tokens, args.tokens)
        ]
        for way, n, got in rows:
            ratio = (
                f"{base['bytes'] / got['bytes']:.1f}x"
                if way == "chunked" and n == args.baseline_tokens
                else ""
            )
            print(f"{name:<9}{way:<9}{n:>8}{got['bytes'] / gib:>9.2f}{got['s']:>8.1f}{ratio:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rollout throughput: the HF sampler (crlab.train.rollouts.sampling, what the trainer uses with rollout.engine=hf) against
vLLM (crlab.train.rollouts.vllm_rollout), on the same prompts and sampling settings, side by side in one run.

    python benchmarks/rollout_throughput.py [--model tiny://coder] [--dtype float32] [--prompts 16] [--n 4]
        [--max-new-tokens 96] [--rounds 2] [--eager] [--json]

Prompts: the first ``--prompts`` problems of the bundled tiny task, in the tiny prompt style for tiny://coder
and the LiveCodeBench-style one otherwise, each sampled ``--n`` times at temperature 0.6, top-p 0.95,
top-k 20 (the paper's settings) with at most ``--max-new-tokens`` new tokens. Each engine is loaded once
(its load time is shown apart), warmed up with one short call, then timed over ``--rounds`` calls; the
table shows the fastest round (the least disturbed by other work on the machine). Tokens are the sampled
response tokens, EOS included; both engines stop at EOS, so their token counts differ a little. On a GPU
the HF sampler runs on the GPU and vLLM takes half of its memory. On CPU, vLLM needs its CPU build and
``VLLM_CPU_KVCACHE_SPACE`` (GiB; 1 is plenty here), and torch's threads are left at their default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}


def _prompts(model: str, count: int) -> list[str]:
    from crlab.data.prompts import code_prompt
    from crlab.data.tiny import generate_tiny_problems
    from crlab.train.tiny.model import TINY_URI

    style = "tiny" if model == TINY_URI else "qwen3"
    return [code_prompt(p, style) for p in generate_tiny_problems(count, seed=0)]


def _time(rollout: Any, prompts: list[str], args: argparse.Namespace) -> dict[str, float]:
    rollout.generate(prompts[:2], 1, 8)  # warm-up
    best: dict[str, float] | None = None
    for _ in range(args.rounds):
        start = time.perf_counter()
        out = rollout.generate(prompts, args.n, args.max_new_tokens)
        seconds = time.perf_counter() - start
        tokens = sum(len(ids) for ids in out.response_ids)
        if best is None or tokens / seconds > best["tokens_per_s"]:
            best = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    assert best is not None
    return best


def _hf(cfg: Any, model_dir: str, prompts: list[str], args: argparse.Namespace) -> dict[str, float]:
    from crlab.train.loop import setup
    from crlab.train.rollouts.rollout import HFRollout

    start = time.perf_counter()
    model, tok = setup.load_policy(cfg, model_dir)
    if torch.cuda.is_available():
        model = model.cuda()
    rollout = HFRollout(model.eval(), tok, **SAMPLING, batch_size=len(prompts))
    load_s = time.perf_counter() - start
    row = {"load_s": load_s, **_time(rollout, prompts, args)}
    del rollout, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def _vllm(cfg: Any, model_dir: str, prompts: list[str], args: argparse.Namespace) -> dict[str, float]:
    from crlab.train.loop import setup
    from crlab.train.rollouts.vllm_rollout import VLLMRollout, VLLMSettings

    start = time.perf_counter()
    _, tok = setup.load_policy(cfg, model_dir)
    settings = VLLMSettings(
        dtype=args.dtype, gpu_memory_utilization=0.5, max_model_len=cfg.data.max_prompt_length + args.max_new_tokens,
        enforce_eager=args.eager, seed=0,
    )  # fmt: skip
    rollout = VLLMRollout(model_dir, tok, **SAMPLING, settings=settings)
    load_s = time.perf_counter() - start
    try:
        return {"load_s": load_s, **_time(rollout, prompts, args)}
    finally:
        rollout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny://coder")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile / CUDA graphs")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    from crlab.config import load_config
    from crlab.train.loop import setup

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = load_config(None, [f"model.path={args.model}", f"model.dtype={args.dtype}", "data.max_prompt_length=1024"])
    model_dir = setup.resolve_model(cfg)
    prompts = _prompts(args.model, args.prompts)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    threads = torch.get_num_threads()
    rows = {"hf": _hf(cfg, model_dir, prompts, args), "vllm": _vllm(cfg, model_dir, prompts, args)}
    ratio = rows["vllm"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
    if args.json:
        print(json.dumps({"device": device, "settings": vars(args), "rows": rows, "vllm_over_hf": ratio}))
        return 0
    print(f"{args.model} ({args.dtype}) on {device}, torch threads {threads}: {len(prompts)} prompts x n={args.n}, "
          f"<= {args.max_new_tokens} new tokens, T 0.6 / top-p 0.95 / top-k 20, best of {args.rounds} rounds")  # fmt: skip
    print("| engine | load s | tokens | seconds | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['load_s']:.1f} | {row['tokens']:.0f} | {row['seconds']:.2f} | {row['tokens_per_s']:.0f} |")
    print(f"vLLM / HF tokens per second: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

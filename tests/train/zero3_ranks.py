"""One rank of tests/train/test_zero3.py's two-rank check (run as a script, RANK/WORLD_SIZE/MASTER_* set).

Both ranks hold the same small Qwen3 model (tied embeddings, as Qwen3-4B), partitioned by a ZeRO-3
TrainEngine, and a plain copy. Each rank does what a trainer's step does, with work of a different size on
each rank:

- samples greedily with ``synced=True``, rank 0's rows ending at their first token (every token is an
  end-of-sequence token there), rank 1's running to the limit; the plain copy samples the same alone;
- runs the log-prob pass over 3 micro-batches on rank 0 and 1 on rank 1 (padded to 3 forwards);
- makes one update over the same micro-batches, rank 1's padded with two zero-weight ones; the plain copy
  makes the same update by hand (each rank's gradient, averaged over the ranks, then AdamW).

Writes ``rank{R}.pt`` into the folder named by its one argument.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as tdist
from transformers import Qwen3Config, Qwen3ForCausalLM

from crlab.train.engine import dist
from crlab.train.engine.deepspeed_engine import ADAM_BETAS, ADAM_EPS, TrainEngine
from crlab.train.loop.step import (
    fill_logprobs,
    micro_loss,
    micro_weights,
    pack,
    pad_micro_weights,
    update_loss,
)
from crlab.train.rollouts import sampling
from crlab.train.rollouts.rollout import Rollouts

# DeepSpeed's defaults keep this small model whole on every rank after the first forward (parameters under
# 100k elements are never split; up to 1e9 gathered elements stay live while they will be reused): without
# these settings no later forward would gather anything, as no forward of a 4B model could avoid it
EVERY_PARAMETER_SPLIT = {
    "zero_optimization": {
        "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 0,
        "stage3_max_reuse_distance": 0, "stage3_prefetch_bucket_size": 0,
    }
}  # fmt: skip


class Grpo:
    clip_low, clip_high, kl_coef, entropy_coef, loss_agg, dual_clip_c = 0.2, 0.3, 0.0, 0.0, "token-mean", 3.0


def _packed(rank: int):  # noqa: ANN202
    g = torch.Generator().manual_seed(10 + rank)
    sizes = [(4, 30), (3, 12), (5, 3)] if rank == 0 else [(6, 9)]  # (prompt, response) per row
    prompts = [torch.randint(3, 64, (p,), generator=g).tolist() for p, _ in sizes]
    responses = [torch.randint(3, 64, (r,), generator=g).tolist() for _, r in sizes]
    rollouts = Rollouts(
        prompts, responses, [[0.0] * len(r) for r in responses], [""] * len(sizes), [False] * len(sizes)
    )
    advantages = torch.linspace(-1.0, 1.0, len(sizes)) + 0.1 * rank
    return pack(rollouts, list(range(len(sizes))), advantages, pad_id=0)


def _sample(model, rank: int, synced: bool):  # noqa: ANN001, ANN202
    prompts = torch.randint(3, 64, (2, 5), generator=torch.Generator().manual_seed(rank))  # (P, L)
    eos = set(range(64)) if rank == 0 else {-1}  # rank 0: done after one token; rank 1: never
    return sampling.sample(
        model, prompts, torch.ones_like(prompts), 2, 8, temperature=0.0, top_p=1.0, top_k=0, eos_ids=eos,
        pad_id=0, synced=synced,
    )[0]  # fmt: skip


def _by_hand(plain, packed, chunks) -> None:  # noqa: ANN001
    """The update the engine should make: this rank's gradient, averaged over the ranks, then AdamW."""
    fill_logprobs(plain, packed, 1.0, chunks)
    for part, weight in micro_weights(packed, chunks, "token-mean"):
        micro_loss(plain, part, weight=weight, grpo_cfg=Grpo, temperature=1.0)[0].backward()
    for p in plain.parameters():
        tdist.all_reduce(p.grad)
        p.grad /= tdist.get_world_size()
    torch.optim.AdamW(plain.parameters(), lr=1e-2, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0).step()


def main(out: Path) -> None:
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen3ForCausalLM(cfg)
    plain = copy.deepcopy(model)
    engine = TrainEngine(
        model, lr=1e-2, warmup_steps=0, total_steps=1, weight_decay=0.0, max_grad_norm=0.0, zero_stage=3,
        precision="fp32", offload_optimizer=False, offload_params=False, ds_overrides=EVERY_PARAMETER_SPLIT,
    )  # fmt: skip
    rank = dist.rank()
    synced, alone = _sample(engine.module, rank, synced=True), _sample(plain, rank, synced=False)
    packed = _packed(rank)
    chunks = [[0], [1], [2]] if rank == 0 else [[0]]
    fill_logprobs(engine.module, packed, 1.0, chunks, forwards=3)
    items = pad_micro_weights(micro_weights(packed, chunks, "token-mean"), 3, packed, chunks)
    stats = engine.update(items, lambda m, item: update_loss(m, item, Grpo, 1.0))
    olds = packed.old_logp
    _by_hand(plain, packed, chunks)
    result = {
        "synced": synced, "alone": alone, "old_logp": olds, "by_hand_old_logp": packed.old_logp,
        "weights": engine.full_parameters(), "by_hand": {k: v.detach() for k, v in plain.named_parameters()},
        "n_micro_batches": stats["n_micro_batches"], "stats_keys": sorted(stats),
    }  # fmt: skip
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

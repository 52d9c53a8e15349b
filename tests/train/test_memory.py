"""The memory estimate of `platform run --dry-run`: rows worked out by hand, parameter counts against real
models, and the dry run's output (the model's config read without its weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.train.engine.memory import ModelShape, dry_run_report, estimate, read_model_config

REPO = Path(__file__).resolve().parents[2]
# A Qwen3-style model small enough to count by hand: 185,622,016 parameters (see the first test).
SMALL = {
    "model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 10, "num_attention_heads": 8,
    "num_key_value_heads": 2, "head_dim": 128, "intermediate_size": 4096, "vocab_size": 32768,
    "tie_word_embeddings": True,
}  # fmt: skip
SHAPES = [
    "grpo.micro_batch_size=2", "data.max_prompt_length=1024", "phases.0.max_response_length=2048",
    "phases.1.max_response_length=3072", "model.gradient_checkpointing=true",
]  # fmt: skip


def _gib(rows: list, name: str) -> float | None:
    (row,) = [r for r in rows if r.name == name]
    return row.gpu_bytes


def test_parameters_by_hand() -> None:
    # embeddings 32768*1024 = 33,554,432; a layer: q 1024*1024 + k, v 2*1024*256 + o 1024*1024 + MLP 3*1024*4096
    # + norms 2*1024 + q/k norms 2*128 = 15,206,656, ten of them 152,066,560; the final norm 1024; tied head
    assert ModelShape.from_config(SMALL).parameters() == 185_622_016


@pytest.mark.parametrize("config", [SMALL, {**SMALL, "tie_word_embeddings": False, "model_type": "llama"}])
def test_parameters_match_a_real_model(config: dict) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    small = {**config, "num_hidden_layers": 1, "vocab_size": 1000}  # the same formula, a quick model
    kind = small.pop("model_type")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **small))
    assert ModelShape.from_config({**small, "model_type": kind}).parameters() == sum(
        p.numel() for p in model.parameters()
    )


def test_zero3_on_four_ranks_by_hand() -> None:
    cfg = load_config(None, [*SHAPES, "deepspeed.zero_stage=3", "rollout.engine=hf"])
    rows = estimate(cfg, SMALL, world=4)
    assert _gib(rows, "parameters") == 185_622_016 * 2 / 4  # bf16, a quarter each
    assert _gib(rows, "gradients") == 185_622_016 * 2 / 4
    assert _gib(rows, "optimizer states") == 185_622_016 * 12 / 4  # fp32 master + 2 moments
    # 2 rows x (1024 + 3072) tokens; per token 10 layer inputs (10 * 1024) + one layer recomputed
    # (4*1024 + 3*1024 + 3*256 + 4*4096 = 24,320) + the final hidden state (1024) = 35,584 bf16 values
    assert _gib(rows, "activations") == 8192 * 35_584 * 2
    # 2**25 // 32768 = 1024 tokens a chunk, 12 bytes a logit (fp32 logits and softmax, bf16 matmul and grad)
    assert _gib(rows, "logits") == 1024 * 32768 * 12
    assert [r.name for r in rows] == [
        "parameters",
        "gradients",
        "optimizer states",
        "activations",
        "logits",
        "total",
    ]
    assert rows[-1].gpu_bytes == 1_728_149_504


def test_stages_offload_and_checkpointing_move_the_rows() -> None:
    two = estimate(load_config(None, [*SHAPES, "deepspeed.zero_stage=2"]), SMALL, world=4)
    assert _gib(two, "parameters") == 185_622_016 * 2 and _gib(two, "gradients") == 185_622_016 * 2 / 4
    one = estimate(load_config(None, [*SHAPES, "deepspeed.zero_stage=1", "deepspeed.offload_optimizer=true"]),
                   SMALL, world=4)  # fmt: skip
    assert _gib(one, "gradients") == 185_622_016 * 2 and _gib(one, "optimizer states") == 0.0
    (states,) = [r for r in one if r.name == "optimizer states"]
    assert "CPU memory" in states.note and "0.52 GiB" in states.note  # 556,866,048 bytes per rank
    full = estimate(load_config(None, [*SHAPES, "model.gradient_checkpointing=false"]), SMALL, world=1)
    assert _gib(full, "activations") == 8192 * (10 * 24_320 + 1024) * 2
    assert any(r.name == "vLLM" and r.gpu_bytes is None for r in full)  # rollout.engine auto: a note
    # a token budget of 20,000 holds four rows of 4,096 tokens: twice micro_batch_size=2
    budget = estimate(load_config(None, [*SHAPES, "grpo.micro_batch_tokens=20000"]), SMALL, world=4)
    assert _gib(budget, "activations") == 2 * 8192 * 35_584 * 2
    small = estimate(load_config(None, [*SHAPES, "grpo.micro_batch_tokens=1000"]), SMALL, world=4)
    assert _gib(small, "activations") == 4096 * 35_584 * 2  # at least one row, whatever the budget


def test_the_tiny_coder_config_is_read_without_weights() -> None:
    cfg = load_config(REPO / "experiments/tiny_coder.yaml")
    config = read_model_config(cfg)
    from crlab.train.loop.setup import load_policy, resolve_model

    model, _ = load_policy(cfg, resolve_model(cfg))
    assert ModelShape.from_config(config).parameters() == sum(p.numel() for p in model.parameters())


def test_the_dry_run_prints_the_estimate_or_why_not() -> None:
    def dry(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "crlab", "run", *args, "--dry-run"]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)

    text = dry("experiments/tiny_coder.yaml")
    assert text.returncode == 0, text.stderr
    assert "# Memory per GPU, estimated for tiny://coder" in text.stdout and "#   activations" in text.stdout
    data = json.loads(dry("experiments/tiny_coder.yaml", "--json", "--nproc", "2").stdout)
    assert data["memory_per_gpu"]["ranks"] == 2 and data["memory_per_gpu"]["rows"][-1]["name"] == "total"
    text, data = dry_run_report(load_config(None, ["model.path=org/not-a-model"]), 1)  # not in the HF cache
    assert text.startswith("# Memory per GPU: not estimated (cannot read the model config of org/not-a-model")
    assert "local Hugging Face cache" in data["error"]

"""How much GPU memory a training step takes at a config's shapes, estimated before anything is loaded.

``platform run --dry-run`` prints it (per GPU, for ``--nproc`` ranks). The model's shape comes from its
``config.json`` (:func:`read_model_config`, no weights loaded); the rest from the run's config. The rows:

- **parameters, gradients, optimizer states** (the ZeRO paper's model states): mixed precision (bf16 or
  fp16, ``deepspeed.precision`` auto on a GPU) keeps 2 bytes of weights, 2 of gradients and 12 of optimizer
  state per parameter (the fp32 master copy and Adam's two moments); fp32 keeps 4, 4 and 8. ZeRO-1 splits
  the optimizer states over the ranks, ZeRO-2 the gradients too, ZeRO-3 the parameters too. Offloaded
  optimizer states or parameters live in CPU memory (the row says how much, per rank).
- **activations**: one micro-batch of ``grpo.micro_batch_size`` rows (or of the rows a
  ``grpo.micro_batch_tokens`` budget holds) at the longest shapes (prompt plus the longest phase's response), the tensors a Qwen3/Llama-style decoder layer keeps for its backward
  (:func:`layer_elements`, with SDPA/flash attention: no attention matrix). With gradient checkpointing
  (``model.gradient_checkpointing``) each layer keeps its input, and one layer at a time is recomputed.
  Rough: real rows are shorter than the longest, and kernels keep small extras not counted here.
- **logits**: the log-prob pass applies the LM head chunk by chunk (:mod:`crlab.train.grpo.logprobs`), so one
  chunk's logits at a time; the row also says what the full-vocabulary logits would take.
- a reference model (``grpo.kl_coef`` > 0) is whole on every rank; vLLM (``rollout.engine``) takes its
  ``gpu_memory_utilization`` share of the GPU while generating (a note, not added in).

ZeRO-3's working set (the layer being gathered, prefetch buckets) and the CUDA context are not counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlab.models import ModelDtype
from crlab.train.engine.ds_config import Precision
from crlab.train.grpo.logprobs import chunk_tokens
from crlab.train.rollouts import RolloutEngine

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """A decoder's sizes, as its ``config.json`` gives them."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qk_norm: bool  # Qwen3: an RMSNorm on each query and key head

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        """From a Hugging Face config dict (Qwen2/3, Llama, Mistral, SmolLM keys); a KeyError names a
        missing key."""
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            hidden=hidden, layers=int(config["num_hidden_layers"]), vocab=int(config["vocab_size"]),
            intermediate=int(config["intermediate_size"]), heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            tied=bool(config.get("tie_word_embeddings", False)), qk_norm=config.get("model_type") == "qwen3",
        )  # fmt: skip

    def parameters(self) -> int:
        """Parameter count: embeddings, per layer attention (q, k, v, o), SwiGLU MLP and norms, the final
        norm and an untied LM head."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate + 2 * h
        layer += 2 * self.head_dim if self.qk_norm else 0
        head = 0 if self.tied else self.vocab * h
        return self.vocab * h + self.layers * layer + h + head


def layer_elements(shape: ModelShape) -> int:
    """Elements per token one decoder layer keeps for its backward: its two norms' inputs and outputs (4h),
    the queries before and after their norm and the attention output (3q), the keys before and after their
    norm and the values (3kv), and the MLP's gate, up, activation and product (4I)."""
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    return 4 * shape.hidden + 3 * q + 3 * kv + 4 * shape.intermediate


@dataclass(frozen=True)
class Row:
    name: str
    gpu_bytes: float | None  # None: a note only, not in the total
    note: str

    def to_json(self) -> dict[str, Any]:
        gib = None if self.gpu_bytes is None else round(self.gpu_bytes / GIB, 3)
        return {"name": self.name, "gib": gib, "note": self.note}


def _gib(n: float) -> str:
    return f"{n / GIB:,.2f} GiB" if n >= GIB / 8 else f"{n / 1024**2:,.1f} MiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def model_state_rows(cfg: ExperimentConfig, params: int, world: int) -> list[Row]:
    """Parameters, gradients and optimizer states per GPU (ZeRO partitions, offload)."""
    ds = cfg.deepspeed
    mixed = ds.precision != Precision.FP32  # auto is bf16 on a GPU
    width, optim = (2, 12) if mixed else (4, 8)
    stage = int(ds.zero_stage)
    kind = Precision.BF16 if ds.precision == Precision.AUTO else ds.precision

    def share(bytes_per: int, from_stage: int) -> tuple[float, str]:
        split = stage >= from_stage and world > 1
        return params * bytes_per / (world if split else 1), (
            f"1/{world} per rank (ZeRO-{stage})" if split else "whole"
        )

    p_bytes, p_note = share(width, 3)
    g_bytes, g_note = share(width, 2)
    o_bytes, o_note = share(optim, 1)
    rows = []
    if ds.offload_params:
        rows.append(Row("parameters", 0.0, f"{kind}, offloaded: {_gib(p_bytes)} in CPU memory per rank"))
    else:
        rows.append(Row("parameters", p_bytes, f"{kind}, {p_note}"))
    rows.append(Row("gradients", g_bytes, f"{kind}, {g_note}"))
    states = ("fp32 master copy + " if mixed else "") + "2 Adam moments (fp32)"
    if ds.offload_optimizer:
        rows.append(
            Row("optimizer states", 0.0, f"{states}, offloaded: {_gib(o_bytes)} in CPU memory per rank")
        )
    else:
        rows.append(Row("optimizer states", o_bytes, f"{states}, {o_note}"))
    return rows


def step_tokens(cfg: ExperimentConfig) -> tuple[int, int]:
    """(rows, tokens per row) of the largest micro-batch: prompt plus the longest phase's response, and
    ``grpo.micro_batch_size`` rows, or under ``grpo.micro_batch_tokens`` as many rows of that length as
    the budget holds (at least one)."""
    length = int(cfg.data.max_prompt_length) + max(int(p.max_response_length) for p in cfg.phases)
    budget = cfg.grpo.micro_batch_tokens
    return (max(1, int(budget) // length) if budget else int(cfg.grpo.micro_batch_size)), length


def activation_row(cfg: ExperimentConfig, shape: ModelShape) -> Row:
    rows, length = step_tokens(cfg)
    tokens, width = rows * length, 2 if cfg.deepspeed.precision != Precision.FP32 else 4
    if cfg.model.gradient_checkpointing:
        per_token = shape.layers * shape.hidden + layer_elements(shape) + shape.hidden
        how = "gradient checkpointing: each layer's input, one layer recomputed at a time"
    else:
        per_token = shape.layers * layer_elements(shape) + shape.hidden
        how = "no gradient checkpointing: every layer's tensors"
    note = f"a micro-batch of {rows} x {length:,} tokens ({how}; rough, the longest rows)"
    return Row("activations", float(tokens * per_token * width), note)


def logits_row(cfg: ExperimentConfig, shape: ModelShape) -> Row:
    """One chunk of logits: fp32 logits and softmax plus the matmul's output and the gradient in the model's
    width; what the same over the whole micro-batch would hold is noted."""
    width = 2 if cfg.deepspeed.precision != Precision.FP32 else 4
    rows, length = step_tokens(cfg)
    chunk = min(chunk_tokens(shape.vocab), rows * length)
    per = 8 + 2 * width  # bytes per logit: fp32 logits and softmax, the matmul's output and the gradient
    full = rows * length * shape.vocab * per
    note = (
        f"chunked: {chunk:,} tokens x {shape.vocab:,} at a time (the whole micro-batch at once: {_gib(full)})"
    )
    return Row("logits", float(chunk * shape.vocab * per), note)


def extra_rows(cfg: ExperimentConfig, params: int) -> list[Row]:
    rows = []
    if cfg.grpo.kl_coef > 0:
        width = 4 if cfg.model.dtype == ModelDtype.FLOAT32 else 2
        rows.append(Row("reference model", float(params * width), f"{cfg.model.dtype}, whole on every rank"))
    if cfg.rollout.engine in (RolloutEngine.VLLM, RolloutEngine.AUTO):
        share = cfg.rollout.gpu_memory_utilization
        asleep = (
            "freed during the update (sleep mode)" if cfg.rollout.sleep_mode else "held during the update"
        )
        rows.append(Row("vLLM", None, f"{share:.0%} of the GPU while generating, {asleep}; not added in"))
    return rows


def estimate(cfg: ExperimentConfig, model_config: dict[str, Any], world: int = 1) -> list[Row]:
    """The memory rows per GPU for ``cfg`` on ``world`` ranks, and a ``total`` row last."""
    shape = ModelShape.from_config(model_config)
    params = shape.parameters()
    rows = model_state_rows(cfg, params, world)
    rows += [activation_row(cfg, shape), logits_row(cfg, shape), *extra_rows(cfg, params)]
    total = sum(r.gpu_bytes for r in rows if r.gpu_bytes is not None)
    about = (
        f"{_count(params)} parameters, hidden {shape.hidden}, {shape.layers} layers, vocab {shape.vocab:,}"
    )
    return [*rows, Row("total", total, f"{world} rank(s), ZeRO-{cfg.deepspeed.zero_stage}; {about}")]


def read_model_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """``model.path``'s ``config.json`` as a dict, without loading weights; a ValueError says why not."""
    from crlab import models
    from crlab.train.tiny.model import TINY_URI, shipped_dir, tiny_dir

    path = cfg.model.path
    if path == TINY_URI:
        folder = shipped_dir() or tiny_dir(cfg.paths.cache_dir)
    elif models.is_smollm2(path):
        folder = models.converted_dir(path, cfg.paths.cache_dir)
    else:
        folder = Path(path).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    if models.is_smollm2(path) or path == TINY_URI or path.startswith(("/", ".", "~")):
        raise ValueError(f"no config.json in {folder} (it is built on the first run)")
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, local_files_only=True).to_dict()
    except (OSError, ValueError):
        raise ValueError(
            f"{path} is not in the local Hugging Face cache (download it, or give model.path a local folder)"
        ) from None


def render(rows: list[Row], model_path: str) -> str:
    """The estimate as YAML comment lines (the dry run's output stays valid YAML)."""
    lines = [f"# Memory per GPU, estimated for {model_path} ({rows[-1].note}):"]
    for row in rows[:-1]:
        amount = "-" if row.gpu_bytes is None else _gib(row.gpu_bytes)
        lines.append(f"#   {row.name:<17} {amount:>12}   {row.note}")
    lines.append(f"#   {'total':<17} {_gib(rows[-1].gpu_bytes or 0.0):>12}")
    return "\n".join(lines) + "\n"


def dry_run_report(cfg: ExperimentConfig, world: int) -> tuple[str, dict[str, Any]]:
    """What ``platform run --dry-run`` shows: (YAML comment lines, a JSON-able dict); when the model's
    config cannot be read, both say why."""
    try:
        rows = estimate(cfg, read_model_config(cfg), world)
    except (ValueError, KeyError) as exc:
        why = f"cannot read the model config of {cfg.model.path}: {str(exc).strip(chr(39))}"
        return f"# Memory per GPU: not estimated ({why})\n", {"error": why}
    return render(rows, cfg.model.path), {"ranks": world, "rows": [r.to_json() for r in rows]}


def measured_peak() -> dict[str, float]:
    """``perf/gpu_peak_gib``: the most GPU memory torch allocated in this process since the last call (the
    trainer's step: the model, optimizer, activations and, colocated in this process, vLLM's allocations made
    through torch); then the count starts again. Nothing without CUDA. Set beside the estimate above by
    benchmarks/gpu_check.sh."""
    import torch

    if not torch.cuda.is_available():
        return {}
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return {"perf/gpu_peak_gib": peak}

"""The DeepSpeed config a :class:`crlab.train.engine.deepspeed_engine.TrainEngine` is built with: ZeRO stage, precision and
offload from plain arguments, raw DeepSpeed keys merged last (see the engine's module docstring)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Precision(StrEnum):
    """``deepspeed.precision``: auto (bf16 on CUDA, fp32 elsewhere) or one of DeepSpeed's."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class WarmupUnit(StrEnum):
    """``grpo.warmup_unit``: what the LR warm-up counts (verl: training steps, the first at lr 0)."""

    OPTIMIZER_STEP = "optimizer_step"
    TRAINING_STEP = "training_step"


ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` elsewhere; an unsupported explicit precision is a ValueError."""
    import torch

    if precision not in set(Precision):
        raise ValueError(f"precision must be one of {', '.join(Precision)}; got {precision!r}")
    if precision == Precision.AUTO:
        return Precision.BF16 if torch.cuda.is_available() else Precision.FP32
    if precision == Precision.FP32:
        return precision
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    supported = accel.is_bf16_supported() if precision == Precision.BF16 else accel.is_fp16_supported()
    if not supported:
        raise ValueError(
            f"precision {precision!r} is not supported by DeepSpeed on this machine's accelerator "
            f"({accel.device_name()}); use precision='fp32' (or 'auto') here, or run on a GPU"
        )
    return precision


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _zero_section(zero_stage: int, offload_optimizer: bool, offload_params: bool) -> dict[str, Any]:
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3; got {zero_stage!r}")
    if offload_optimizer and zero_stage == 0:
        raise ValueError(
            "offload_optimizer needs zero_stage 1, 2 or 3 (got 0); raise zero_stage or turn it off"
        )
    if offload_params and zero_stage != 3:
        raise ValueError(
            f"offload_params needs zero_stage 3 (got {zero_stage}); set zero_stage=3 or turn it off"
        )
    import torch

    pin = torch.cuda.is_available()
    zero: dict[str, Any] = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return zero


def build_ds_config(
    *,
    lr: float,
    weight_decay: float,
    max_grad_norm: float,
    zero_stage: int,
    precision: str,
    offload_optimizer: bool,
    offload_params: bool,
    ds_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config dict for these arguments, with ``ds_overrides`` deep-merged last.

    ``precision`` is resolved here (``auto`` -> bf16/fp32). An ``optimizer`` section appears only with
    ``offload_optimizer`` (DeepSpeed then builds ``DeepSpeedCPUAdam``); otherwise the engine passes a
    torch AdamW. A ``scheduler`` key in the overrides is refused: the engine owns the LR schedule.
    """
    if max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0 turns clipping off); got {max_grad_norm}")
    overrides = dict(ds_overrides or {})
    if "scheduler" in overrides:
        raise ValueError(
            "ds_overrides['scheduler'] is not supported: the engine owns the LR schedule; "
            "set lr and warmup_steps instead"
        )
    resolved = resolve_precision(precision)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(max_grad_norm),
        "zero_optimization": _zero_section(zero_stage, offload_optimizer, offload_params),
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": resolved == "bf16"},
        "fp16": {"enabled": resolved == "fp16"},
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
    if offload_optimizer:
        config["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": lr, "betas": list(ADAM_BETAS), "eps": ADAM_EPS, "weight_decay": weight_decay},
        }
    return _deep_merge(config, overrides)

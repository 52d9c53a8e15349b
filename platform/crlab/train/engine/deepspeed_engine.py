"""The DeepSpeed training engine: one optimizer step per GRPO mini-batch, over any number of micro-batches.

:class:`TrainEngine` wraps ``deepspeed.initialize`` with a config built from plain arguments (ZeRO stage,
precision, offload) plus raw DeepSpeed keys merged last. Checkpoints live in :mod:`crlab.train.engine.checkpoint`
(re-exported here).

Decisions worth knowing:

- Gradient accumulation is owned by the caller: the config sets ``managed_gradient_accumulation: false``
  and ``gradient_accumulation_steps: 1`` and every backward runs with ``scale_wrt_gas=False``. DeepSpeed
  therefore never divides the loss by a micro-batch count; the loss function normalises over the whole
  mini-batch (e.g. token-mean over all its tokens) and :meth:`TrainEngine.update` may get a different
  number of micro-batches each time. Across data-parallel ranks DeepSpeed averages the gradients, so each
  rank's loss is normalised over that rank's share of the mini-batch.
- Optimizer: ``torch.optim.AdamW`` passed as DeepSpeed's client optimizer (works on CPU and GPU, stages
  0-3, no compiled op). With ``offload_optimizer`` (or an ``optimizer`` key in ``ds_overrides``) DeepSpeed
  builds the optimizer from its config instead (AdamW -> ``DeepSpeedCPUAdam`` when offloading, which
  compiles a C++ op on first use, minutes on a small CPU). Weight decay applies to every parameter, as
  verl does.
- LR schedule: a ``LambdaLR`` on the optimizer, stepped by DeepSpeed after each applied optimizer step and
  saved in its checkpoints. Optimizer step ``k`` (1-based) uses ``lr * min(1, k / warmup_steps)``: linear
  warm-up reaching ``lr`` on step ``warmup_steps``, then constant (the paper's schedule). With
  ``warmup_unit="training_step"`` (verl, the authors' run) the schedule counts training steps instead:
  every optimizer step of training step ``i`` (0-based, set by :meth:`TrainEngine.begin_training_step`)
  uses ``lr * min(1, i / warmup_steps)``, so the first training step runs at lr 0. ``total_steps`` is
  validated and kept for the record; a constant schedule does not need it.
- Precision ``auto`` is bf16 on CUDA and fp32 elsewhere. An explicit precision that the accelerator does
  not support is refused with a ValueError (on CPU: fp16 is refused; bf16 works and is allowed).
- Gradient clipping and the reported ``grad_norm`` (the total norm before clipping): DeepSpeed clips and
  measures in its ZeRO / mixed-precision optimizers; on the plain fp32 stage-0 path it clips without
  reporting the norm, so there the engine clips itself, in a hook that runs inside ``step()`` after the
  data-parallel gradient all-reduce.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from crlab.train.engine.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from crlab.train.engine.ds_config import ADAM_BETAS, ADAM_EPS, WarmupUnit, build_ds_config, resolve_precision

__all__ = [
    "CheckpointManager",
    "TrainEngine",
    "build_ds_config",
    "capture_rng_state",
    "init_distributed",
    "resolve_precision",
    "restore_rng_state",
    "warmup_then_constant",
]


LossFn = Callable[[Any, Any], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed() -> None:
    """Start the process group once (idempotent): gloo on CPU, nccl on CUDA.

    Under a launcher (torchrun, the deepspeed launcher, Slurm via submitit) the launcher's RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are used as they are. In a single process the
    missing ones default to rank 0 of 1 on 127.0.0.1 and a free port (so that concurrent test processes
    on one machine do not collide).
    """
    import deepspeed
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and deepspeed.comm.is_initialized():
        return
    single = os.environ.get("WORLD_SIZE", "1") == "1"
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port() if single else 29500)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":
        _skip_shm_comm_op()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def _skip_shm_comm_op() -> None:
    """DeepSpeed's CPU backend compiles a shared-memory all-reduce op when its process group starts (a
    C++ build, 30-50 s on a fresh 2-core machine) that only DeepSpeed *inference* uses
    (``inference_all_reduce``); training reduces through torch.distributed (gloo). Marking the op
    incompatible skips the build; nothing else reads that entry."""
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def warmup_then_constant(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier for ``LambdaLR``: ``min(1, (i + 1) / warmup_steps)`` for the optimizer step of index i."""

    def factor(index: int) -> float:
        if warmup_steps <= 0:
            return 1.0
        return min(1.0, (index + 1) / warmup_steps)

    return factor


def _enabled(config: Mapping[str, Any], key: str) -> bool:
    section = config.get(key)
    return bool(section.get("enabled", False)) if isinstance(section, Mapping) else False


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


def _initialize(
    model: torch.nn.Module, config: dict[str, Any], lr: float, weight_decay: float,
    factor: Callable[[int], float],
) -> tuple[Any, torch.optim.lr_scheduler.LRScheduler]:  # fmt: skip
    """``deepspeed.initialize`` with a torch AdamW (unless the config names an optimizer) and the LR schedule."""
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    client_optimizer = None
    if "optimizer" not in config:
        client_optimizer = torch.optim.AdamW(
            trainable, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay
        )
    ds_engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=trainable if client_optimizer is None else None,
        optimizer=client_optimizer,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, factor),
        config=config,
    )
    return ds_engine, scheduler


class TrainEngine:
    """A model wrapped by DeepSpeed: :meth:`update` runs one optimizer step over a list of micro-batches.

    ``module`` is the unwrapped model (for ``generate()``; under ZeRO-3 its parameters are partitioned,
    use :meth:`full_parameters` to read them whole). ``ds_engine`` is the DeepSpeed engine (what the loss
    function receives and what checkpoints save). ``ds_config`` is the config DeepSpeed was given.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        lr: float,
        warmup_steps: int,
        total_steps: int,
        weight_decay: float,
        max_grad_norm: float,
        zero_stage: int,
        precision: str,
        offload_optimizer: bool,
        offload_params: bool,
        ds_overrides: Mapping[str, Any] | None = None,
        warmup_unit: str = WarmupUnit.OPTIMIZER_STEP,
    ) -> None:
        if warmup_unit not in set(WarmupUnit):
            raise ValueError(f"warmup_unit must be one of {', '.join(WarmupUnit)}, got {warmup_unit!r}")
        if lr < 0 or warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"need lr >= 0, warmup_steps >= 0 and total_steps >= 1; got lr={lr}, "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.lr, self.warmup_steps, self.total_steps = lr, warmup_steps, total_steps
        config = build_ds_config(
            lr=lr,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            zero_stage=zero_stage,
            precision=precision,
            offload_optimizer=offload_optimizer,
            offload_params=offload_params,
            ds_overrides=ds_overrides,
        )
        self.zero_stage = int(config["zero_optimization"].get("stage", zero_stage))
        # Plain fp32 stage 0: DeepSpeed would clip without reporting the norm, so the engine clips itself.
        self._own_clip: float | None = None
        if self.zero_stage == 0 and not (_enabled(config, "bf16") or _enabled(config, "fp16")):
            self._own_clip = float(config.get("gradient_clipping", 0.0))
            config["gradient_clipping"] = 0.0
        self.ds_config = config
        self._own_norm: float | None = None
        init_distributed()
        self.warmup_unit, self.training_step = warmup_unit, 0
        self._warmup = warmup_then_constant(warmup_steps)
        self.origin = (0, 0)  # the warm-up counts from here: (optimizer steps, training step); see restart
        by_step = warmup_unit == WarmupUnit.OPTIMIZER_STEP
        factor = self._step_factor if by_step else self._training_factor
        self.ds_engine, self.scheduler = _initialize(model, config, lr, weight_decay, factor)
        if self._own_clip is not None:
            self.ds_engine.basic_optimizer.register_step_pre_hook(self._clip_before_step)

    @property
    def module(self) -> torch.nn.Module:
        return self.ds_engine.module

    @property
    def device(self) -> torch.device:
        return self.ds_engine.device

    @property
    def global_steps(self) -> int:
        """Optimizer steps taken so far (restored by a checkpoint load)."""
        return int(self.ds_engine.global_steps)

    def _step_factor(self, optimizer_step: int) -> float:
        return self._warmup(optimizer_step - self.origin[0])

    def _training_factor(self, _optimizer_step: int) -> float:
        index = max(0, self.training_step - self.origin[1])
        return 1.0 if self.warmup_steps <= 0 else min(1.0, index / self.warmup_steps)

    def restart(self, training_step: int) -> None:
        """Go on as a new run from these weights would (``switch.restart=fresh``): AdamW's moments and step
        counts are dropped, so its next step starts them again as a first step does (every stage builds
        them lazily, on its first step), and the warm-up starts again: from the next optimizer step, or
        from training step ``training_step`` (0-based) under ``warmup_unit="training_step"``. A collective
        call under ZeRO (every rank clears its own partition)."""
        self.ds_engine.basic_optimizer.state.clear()
        self.set_origin(int(self.scheduler.last_epoch), training_step)

    def set_origin(self, optimizer_steps: int, training_step: int) -> None:
        """Count the warm-up from ``optimizer_steps`` optimizer steps and from training step ``training_step``
        (:meth:`restart`, and a resumed run whose checkpoint is past a restart); sets the next step's LR."""
        self.origin = (optimizer_steps, training_step)
        sched = self.scheduler
        for group, base, factor in zip(
            sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True
        ):
            group["lr"] = base * factor(sched.last_epoch)

    def begin_training_step(self, index: int) -> None:
        """Training step ``index`` (0-based) begins: under ``warmup_unit="training_step"`` its LR is set."""
        self.training_step = index
        if self.warmup_unit == WarmupUnit.TRAINING_STEP:
            groups = self.scheduler.optimizer.param_groups
            for group, base in zip(groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base * self._training_factor(0)

    def current_lr(self) -> float:
        """The LR the next optimizer step will use."""
        return float(self.ds_engine.basic_optimizer.param_groups[0]["lr"])

    def _clip_before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            self._own_norm = 0.0
        elif self._own_clip:
            self._own_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=self._own_clip))
        else:
            self._own_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))

    def _grad_norm(self) -> float:
        if self._own_clip is not None:
            return self._own_norm if self._own_norm is not None else math.nan
        norm = self.ds_engine.get_global_grad_norm()
        return math.nan if norm is None else _as_float(norm)

    def update(self, micro_batches: Sequence[Any], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step over ``micro_batches``; returns ``grad_norm``, ``lr`` and the loss stats.

        For each micro-batch ``loss_fn(ds_engine, mb)`` returns ``loss`` or ``(loss, stats)``; the loss
        must already be normalised for the whole mini-batch: the engine backpropagates it unscaled. Then
        DeepSpeed reduces the gradients, clips them to ``max_grad_norm``, steps the optimizer and the LR
        schedule, and zeroes the gradients.

        Returned: ``loss`` (the sum of the micro-batch losses, i.e. the mini-batch loss), each stats key
        averaged over the micro-batches that report it (a padding micro-batch reports none), ``grad_norm``
        (total norm before clipping), ``lr`` (the LR this step used) and ``n_micro_batches``.
        """
        if not micro_batches:
            raise ValueError("update() needs at least one micro-batch")
        ds = self.ds_engine
        ds.train()
        lr = self.current_lr()
        self._own_norm = None
        total_loss = 0.0
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for mb in micro_batches:
            out = loss_fn(ds, mb)
            loss, mb_stats = out if isinstance(out, tuple) else (out, {})
            ds.backward(loss, scale_wrt_gas=False)
            total_loss += _as_float(loss)
            for key, value in mb_stats.items():
                sums[key] = sums.get(key, 0.0) + _as_float(value)
                counts[key] = counts.get(key, 0) + 1
        ds.step()
        n = len(micro_batches)
        stats = {key: value / counts[key] for key, value in sums.items()}
        stats.update(loss=total_loss, grad_norm=self._grad_norm(), lr=lr, n_micro_batches=float(n))
        return stats

    def full_parameters(self) -> dict[str, torch.Tensor]:
        """Every parameter, whole, as a CPU copy (gathered under ZeRO-3: a collective call on all ranks)."""
        import deepspeed

        params = list(self.module.parameters())
        gather = (
            deepspeed.zero.GatheredParameters(params, modifier_rank=None)
            if self.zero_stage == 3
            else contextlib.nullcontext()
        )
        with gather:
            return {name: p.detach().to("cpu", copy=True) for name, p in self.module.named_parameters()}

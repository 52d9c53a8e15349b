"""Data-parallel helpers for the trainer: which rank this is, and the few collectives a step needs.

With one process every helper is the identity, so single-process runs pay nothing. Under a launcher (the
DeepSpeed launcher, torchrun, Slurm tasks) each rank samples its share of a step's prompts, and the ranks
agree on what must be equal everywhere: when to stop refilling, how many optimizer updates to make,
whether to stop the run, and the step's metrics (computed over every rank's responses).
"""

from __future__ import annotations

from typing import Any

import torch

_GROUP: dict[str, Any] = {}


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def world() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def is_main() -> bool:
    return rank() == 0


def _cpu_group(dist: Any) -> Any:
    """A gloo group for small CPU tensors and objects, also when training runs on NCCL."""
    if dist.get_backend() == "gloo":
        return None
    if "cpu" not in _GROUP:
        _GROUP["cpu"] = dist.new_group(backend="gloo")
    return _GROUP["cpu"]


def all_reduce(value: float, op: str = "sum") -> float:
    """``value`` reduced over the ranks with ``op`` (sum | max | min)."""
    dist = _dist()
    if dist is None:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op], group=_cpu_group(dist))
    return float(tensor.item())


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    dist = _dist()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group(dist))
    return out


def shard(items: list[Any]) -> list[Any]:
    """This rank's share of ``items``: every ``world()``-th one, starting at its rank."""
    return items[rank() :: world()]

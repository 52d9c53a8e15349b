"""Data-parallel helpers for the trainer: which rank this is, and the few collectives a step needs.

With one process every helper is the identity, so single-process runs pay nothing. Under a launcher (the
DeepSpeed launcher, torchrun, Slurm tasks) each rank samples its share of a step's prompts, and the ranks
agree on what must be equal everywhere: when to stop refilling, how many optimizer updates to make,
whether to stop the run, and the step's metrics (computed over every rank's responses). An evaluation runs
on rank 0 alone; the others wait for its metrics (:func:`from_main`).
"""

from __future__ import annotations

import contextlib
import sys
from datetime import timedelta
from typing import Any

import torch

_GROUP: dict[str, Any] = {}
WAIT_S = 24 * 3600  # how long the other ranks wait for rank 0 working alone (an evaluation)


def import_deepspeed() -> None:
    """Import DeepSpeed with its log lines on stderr. Its logger writes to stdout, so its start-up lines
    ("Setting accelerator to CPU ...") would land among a run's step lines and a script's ``--json``; the
    handler keeps the stream it was created with, so creating it under a redirect moves all its lines."""
    if "deepspeed" not in sys.modules:
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401


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


def make_wait_group() -> None:
    """Create the group :func:`from_main` waits on (collective: every rank calls it, at the same point, once;
    the trainer does at start-up when it evaluates)."""
    dist = _dist()
    if dist is not None and "wait" not in _GROUP:
        _GROUP["wait"] = dist.new_group(backend="gloo", timeout=timedelta(seconds=WAIT_S))


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank. The other ranks wait here while rank 0 works alone, on a
    gloo group whose timeout is ``WAIT_S`` (a collective of the default group gives up after 30 minutes, and
    an evaluation at the paper's scale may take longer)."""
    dist = _dist()
    if dist is None:
        return obj
    make_wait_group()
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_GROUP["wait"])
    return box[0]

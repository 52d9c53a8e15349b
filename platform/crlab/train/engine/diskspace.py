"""Disk space for checkpoints: how much is free, how much a checkpoint will take, and whether an error means
the disk is full (:class:`~crlab.train.engine.checkpoint.CheckpointManager` uses all three).

A full disk shows itself in two ways. Plain Python writes (``open().write``, ``shutil.copyfile``) raise
``OSError`` with errno ``ENOSPC`` (or ``EDQUOT``, a quota). ``torch.save`` writes through a C++ stream that
drops the errno: it raises ``RuntimeError('[enforce fail at inline_container.cc:...] . unexpected pos ...')``
(or ``PytorchStreamWriter failed writing file ...: file write failed``), chained to ``'basic_ios::clear:
iostream error'``. Such an error counts as a full disk only while less than :data:`FULL_BELOW` is free.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

FULL_BELOW = 64 << 20  # a torch stream-writer error with less than this free is a full disk
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TORCH_WRITER = ("inline_container", "PytorchStreamWriter", "file write failed", "iostream error")


def human(n: float | None) -> str:
    """``10485760`` -> ``'10.0 MiB'`` (binary units, as ``df -h``); None -> ``'unknown'``."""
    if n is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the filesystem of ``path`` (or of its nearest existing
    parent); None where the filesystem reports a size of 0 (some FUSE mounts), which says nothing."""
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free if usage.total > 0 else None


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and all(exc is not e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def is_no_space(exc: BaseException, path: Path) -> bool:
    """Whether ``exc``, raised by a write under ``path``, means that its disk is full (see the module doc)."""
    chain = _chain(exc)
    if any(isinstance(e, OSError) and e.errno in _NO_SPACE for e in chain):
        return True
    writer = any(isinstance(e, RuntimeError) and any(m in str(e) for m in _TORCH_WRITER) for e in chain)
    free = free_bytes(path) if writer else None
    return free is not None and free < FULL_BELOW


def _storage_bytes(tensors: Iterable[Any], seen: set[int]) -> int:
    """Bytes of the storages behind ``tensors`` not in ``seen`` (torch.save writes a view's whole storage,
    and a storage shared by several tensors, such as tied embeddings, once)."""
    total = 0
    for tensor in tensors:
        if not torch.is_tensor(tensor):
            continue
        storage = tensor.untyped_storage()
        if storage.nbytes() and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def estimate_bytes(engine: Any) -> int:
    """This rank's share of a checkpoint of ``engine`` (a TrainEngine), from the tensors DeepSpeed writes: a
    lower bound (pickling and metadata come on top). Data-parallel rank 0 writes the model-states file (the
    module's weights, and on ZeRO stage 0 in fp32 the optimizer state too); with ZeRO or bf16 every rank
    writes its optimizer file (its optimizer state and fp32 master weights)."""
    ds = engine.ds_engine
    seen: set[int] = set()
    module = _storage_bytes([*ds.module.parameters(), *ds.module.buffers()], seen)
    optimizer = 0
    opt = getattr(ds, "basic_optimizer", None)
    if opt is not None:
        optimizer = _storage_bytes((p for group in opt.param_groups for p in group["params"]), seen)
        optimizer += _storage_bytes((v for state in opt.state.values() for v in state.values()), seen)
    zero_file = bool(getattr(ds, "save_zero_checkpoint", False))
    share = optimizer if zero_file else 0
    if getattr(ds, "save_non_zero_checkpoint", True):
        share += module + (0 if zero_file else optimizer)
    return share

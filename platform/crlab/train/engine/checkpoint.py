"""Atomic, exactly-resumable checkpoints of a :class:`~crlab.train.engine.deepspeed_engine.TrainEngine`.

Layout under the checkpoint root::

    step-000012/                 a checkpoint: counts only with a valid COMPLETE.json
      ds/...                     DeepSpeed's save_checkpoint (tag "ds"): weights, optimizer, LR scheduler
      zero_to_fp32.py ...        DeepSpeed's conversion scripts (ZeRO stages >= 1)
      client_state.json          the caller's client_state (must be JSON-serialisable)
      rng_state_rank00000.pt     python `random`, numpy, torch CPU (and CUDA) RNG states, one file per rank
      COMPLETE.json              written last: {"format", "step", "world_size", "files": {relpath: size}}
    .tmp-step-000014-1a2b3c4d/   a save in progress, or one that was interrupted

A save writes everything into a ``.tmp-*`` directory, fsyncs the files, writes ``COMPLETE.json`` (fsynced),
renames the directory to ``step-N`` (the commit) and fsyncs the root. A checkpoint counts only when its
directory is named ``step-N`` and its COMPLETE.json parses, names step N and lists files that exist with the
listed sizes; anything else is skipped with a warning that names it. After a save, the newest ``keep``
complete checkpoints are kept, older complete ones deleted (except the steps in ``pinned``: the run's best
checkpoint, which keep-K never deletes), and leftover ``.tmp-*`` directories removed; broken ``step-N``
directories are left in place (evidence) and keep being skipped.

A full disk (:mod:`crlab.train.engine.diskspace`). Before writing, the free space under the root is compared with
what the checkpoint needs: the size of the newest complete checkpoint, or the size of the engine's weights,
optimizer state and master weights where that is larger (the first checkpoint, or a grown optimizer state).
Too little raises :class:`~crlab.errors.DiskFull` with nothing written. A disk that fills during the save
(another process writing) fails the write with ENOSPC, or with torch's stream-writer error; then the
``.tmp-*`` directory is removed and DiskFull raised. Either way the previous complete checkpoints are as they
were, and the error is one line: the step, the folder, the space needed and free, and how to go on.

With several ranks every rank calls :meth:`CheckpointManager.save` / :meth:`CheckpointManager.load`
(DeepSpeed's save and load are collective); the root must be on a filesystem all ranks share. The ranks
agree after each stage of a save (space check, temporary folder, writes, commit), so a full disk on any rank
raises the same DiskFull on every rank instead of leaving the others waiting at a barrier.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crlab.errors import DiskFull
from crlab.train.engine.diskspace import estimate_bytes, free_bytes, human, is_no_space

logger = logging.getLogger(__name__)

MANIFEST = "COMPLETE.json"
CLIENT_STATE = "client_state.json"
DS_TAG = "ds"
_FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states: python ``random``, numpy's global RNG, torch CPU and (if present) CUDA.

    Only tensors, numbers, strings, tuples and None, so ``torch.load(weights_only=True)`` reads it back.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the RNGs back to a :func:`capture_rng_state` result (CUDA only where both have it)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj`` in rank order (a barrier too); ``[obj]`` alone."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _first(failures: list[str | None]) -> str | None:
    return next((failure for failure in failures if failure is not None), None)


def _why(exc: BaseException, rank: int) -> str:
    lines = str(exc).strip().splitlines()
    return f"rank {rank}: {type(exc).__name__}: {lines[0] if lines else ''}"


def _guarded(doing: bool, tmp: Path, write: Any, rank: int = 0) -> str | None:
    """Run ``write()`` when ``doing``; None, or why not when the disk is full (other errors propagate)."""
    if not doing:
        return None
    try:
        write()
    except Exception as exc:
        if not is_no_space(exc, tmp):
            raise
        return _why(exc, rank)
    return None


def _manifest_bytes(path: Path) -> int:
    """The bytes of a complete checkpoint: its listed files and the manifest."""
    manifest = path / MANIFEST
    return sum(json.loads(manifest.read_text())["files"].values()) + manifest.stat().st_size


def _intact(complete: list[tuple[int, Path]]) -> str:
    return f"newest checkpoint {complete[-1][1].name} intact" if complete else "no checkpoint yet"


def _rng_file(rank: int) -> str:
    return f"rng_state_rank{rank:05d}.pt"


def _warn(message: str) -> None:
    logger.warning(message)
    warnings.warn(message, stacklevel=3)


def _list_files(directory: Path) -> dict[str, int]:
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(directory).as_posix()] = path.stat().st_size
    return files


def check_checkpoint(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or None when it is one."""
    match = _STEP_DIR.match(path.name)
    if not match:
        return "its name is not step-N"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST} (the save did not finish)"
    except (OSError, ValueError) as exc:
        return f"unreadable {MANIFEST}: {exc}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return f"{MANIFEST} has no 'files' mapping"
    if manifest.get("step") != int(match.group(1)):
        return f"{MANIFEST} names step {manifest.get('step')!r}, not {int(match.group(1))}"
    for rel, size in manifest["files"].items():
        file = path / rel
        if not file.is_file():
            return f"listed file {rel} is missing"
        if file.stat().st_size != size:
            return f"listed file {rel} has {file.stat().st_size} bytes, the manifest says {size}"
    return None


class CheckpointManager:
    """Saves, finds, loads and prunes checkpoints under ``root``; ``keep`` newest complete ones (None: all),
    plus those of the steps in ``pinned`` (the trainer pins its best checkpoint)."""

    def __init__(self, root: Path | str, keep: int | None = 3, run_id: str | None = None) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 (or None to keep every checkpoint); got {keep}")
        self.root = Path(root)
        self.keep = keep
        self.pinned: set[int] = set()  # steps whose checkpoints pruning leaves alone
        self.run_id = run_id  # named in a DiskFull's message (default: the run folder above ``root``)
        self.check_space = True  # False: no free-space check before a save (a full disk is still handled)

    def path_for(self, step: int) -> Path:
        return self.root / f"step-{step:06d}"

    def _scan(self, warn: bool) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, path), oldest first; the rest warned about when ``warn``."""
        if not self.root.is_dir():
            return []
        good = []
        for path in sorted(self.root.iterdir()):
            if not path.is_dir():
                continue
            if path.name.startswith(".tmp-"):
                if warn:
                    _warn(f"skipping partial checkpoint {path} (a save that did not finish)")
                continue
            if not _STEP_DIR.match(path.name):
                continue
            reason = check_checkpoint(path)
            if reason is None:
                good.append((int(_STEP_DIR.match(path.name).group(1)), path))
            elif warn:
                _warn(f"skipping incomplete checkpoint {path}: {reason}")
        return sorted(good)

    def complete(self) -> list[Path]:
        """Every complete checkpoint, oldest first (no warnings)."""
        return [path for _, path in self._scan(warn=False)]

    def latest_complete(self) -> Path | None:
        """The newest complete checkpoint, or None; partial and corrupt ones are skipped with a warning."""
        found = self._scan(warn=True)
        return found[-1][1] if found else None

    def save(self, engine: Any, step: int, client_state: dict[str, Any] | None = None) -> Path:
        """Save ``engine`` (a TrainEngine) at ``step`` atomically; returns the final ``step-N`` path. A full
        disk raises :class:`~crlab.errors.DiskFull` on every rank, with nothing half-written (module doc)."""
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        try:
            client_json = json.dumps(client_state or {}, indent=2, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"client_state must be JSON-serialisable (numbers, strings, lists, dicts): {exc}"
            ) from exc
        rank, world = _rank_world()
        name, needed = self._check_space(engine, step, world)
        rng = capture_rng_state()
        tmp, final = self.root / name, self.path_for(step)
        failed = _first(_gather(_guarded(rank == 0, tmp, lambda: tmp.mkdir(parents=True)), world))
        if failed is None:
            failed = _first(_gather(self._write(engine, tmp, rank, world, rng, client_json), world))
        if failed is None:  # rank 0 commits and prunes; the others wait for how that went
            committed = _guarded(rank == 0, tmp, lambda: self._commit(tmp, final, step, world))
            failed = _first(_gather(committed, world))
        if failed is None and rank == 0:
            self._prune()
        if failed is not None:
            raise self._abandon(tmp, step, needed, rank, world, failed)
        _barrier(world)
        return final

    def _check_space(self, engine: Any, step: int, world: int) -> tuple[str, int]:
        """The temporary folder's name (rank 0's, on every rank) and the space the checkpoint needs: the size
        of the newest complete checkpoint, or the estimate from the engine's tensors where that is larger (or
        there is none). DiskFull on every rank alike when rank 0 sees less free (unless ``check_space`` is
        off)."""
        newest = self._scan(warn=False)
        newest_bytes = _manifest_bytes(newest[-1][1]) if newest else 0
        name = f".tmp-step-{step:06d}-{secrets.token_hex(4)}"
        views = _gather((estimate_bytes(engine), free_bytes(self.root), newest_bytes, name), world)
        needed = max(sum(view[0] for view in views), views[0][2])
        free = views[0][1]
        if self.check_space and free is not None and free < needed:
            what = f"does not fit in {self.root}: needs {human(needed)}, {human(free)} free"
            raise DiskFull(self._full_line(step, f"{what} (nothing written; {_intact(newest)})"))
        return views[0][3], needed

    def _write(
        self, engine: Any, tmp: Path, rank: int, world: int, rng: dict[str, Any], client: str
    ) -> str | None:
        """This rank's files into ``tmp``; None, or why not when the disk is full (other errors propagate)."""
        try:
            engine.ds_engine.save_checkpoint(str(tmp), tag=DS_TAG, save_latest=False)
        except Exception as exc:
            if not is_no_space(exc, tmp):
                raise
            # DeepSpeed's save writes between two barriers, and the error skipped the second, where the other
            # ranks wait (no other collective follows its first write, on any ZeRO stage): meet them there
            _barrier(world)
            return _why(exc, rank)

        def mine() -> None:
            torch.save(rng, tmp / _rng_file(rank))
            if rank == 0:
                (tmp / CLIENT_STATE).write_text(client)

        return _guarded(True, tmp, mine, rank)

    def _abandon(self, tmp: Path, step: int, needed: int, rank: int, world: int, why: str) -> DiskFull:
        """Remove the partial save (rank 0; the others wait for it); the DiskFull that every rank raises."""
        written = 0
        if rank == 0:
            written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else 0
            shutil.rmtree(tmp, ignore_errors=True)
        _barrier(world)
        logger.error("checkpoint of step %d: the disk filled while saving (%s); removed %s", step, why, tmp)
        return DiskFull(self._full_line(
            step, f"ran out of space in {self.root}: needs at least {human(max(needed, written))}, "
            f"{human(free_bytes(self.root))} free (partial save removed; {_intact(self._scan(warn=False))})",
        ))  # fmt: skip

    def _full_line(self, step: int, what: str) -> str:
        run = self.run_id
        if run is None and (self.root.parent / "config.yaml").is_file():
            run = self.root.parent.name  # a run's folder: runs/<id>/checkpoints
        then = f"`platform resume {run or 'RUN'}`"
        return f"checkpoint {self.path_for(step).name} {what}; free space there, then {then}"

    def _commit(self, tmp: Path, final: Path, step: int, world: int) -> None:
        files = _list_files(tmp)
        for rel in files:
            _fsync(tmp / rel)
        manifest = {"format": _FORMAT, "step": step, "world_size": world, "files": files}
        with open(tmp / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        for directory in {tmp / rel for rel in files} | {tmp / MANIFEST}:
            _fsync(directory.parent)
        replaced = None
        if final.exists():  # the same step saved again (e.g. after resuming from an older checkpoint)
            replaced = self.root / f".tmp-replaced-{final.name}-{secrets.token_hex(4)}"
            os.rename(final, replaced)
        os.rename(tmp, final)
        _fsync(self.root)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        logger.info("saved checkpoint %s", final)

    def _prune(self) -> None:
        complete = self._scan(warn=False)
        stale = complete[: -self.keep] if self.keep is not None else []
        for step, path in stale:
            if step in self.pinned:
                continue
            shutil.rmtree(path, ignore_errors=True)
            logger.info("pruned checkpoint %s (keep=%s)", path, self.keep)
        for path in self.root.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("removed leftover %s", path)

    def load(self, engine: Any, path: Path | str) -> dict[str, Any]:
        """Restore weights, optimizer, LR scheduler and RNG states from ``path``; returns the client_state."""
        path = Path(path)
        reason = check_checkpoint(path)
        if reason is not None:
            raise ValueError(f"{path} is not a complete checkpoint: {reason}")
        loaded, _ = engine.ds_engine.load_checkpoint(
            str(path), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if loaded is None:
            raise ValueError(f"DeepSpeed could not load the checkpoint in {path / DS_TAG}")
        rank, _ = _rank_world()
        rng_path = path / _rng_file(rank)
        if not rng_path.is_file():
            _warn(f"{path} has no RNG state for rank {rank}; using rank 0's")
            rng_path = path / _rng_file(0)
        restore_rng_state(torch.load(rng_path, weights_only=True))
        return json.loads((path / CLIENT_STATE).read_text())

"""Writing a run's metrics, events, checkpoints, best flag and ending the way a training run writes them.

The product has one write path for these: a run's :class:`~crlab.registry.writer.RunRecorder` appends each
record to the run's journal, and its background writer applies it with
:func:`~crlab.registry.journal.apply_records`. :class:`Recording` is that recorder with the background writer
replaced by one that applies each record before the call returns, so a test can read the registry at once.
Its methods (``metrics``, ``event``, ``checkpoint``, ``best``, ``status``) are RunRecorder's own, so the
records are built exactly as a run builds them.

    with Recording(registry, run.id) as rec:
        rec.metrics(10, {"eval/pass@1": 0.5})
        rec.checkpoint(10, "/ck/10", kept=["/ck/10"], best=10)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from crlab.registry import Registry
from crlab.registry.journal import Journal, apply_records
from crlab.registry.writer import RunRecorder


class _ApplyNow:
    """The writer side of :class:`Recording`: each record is applied in its own transaction, at once."""

    def __init__(self, engine: Any, run_id: str) -> None:
        self.engine, self.run_id = engine, run_id

    def put(self, record: dict[str, Any]) -> None:
        applied = apply_records(self.engine, self.run_id, [record])
        assert applied == 1, f"record {record['seq']} of run {self.run_id} was not applied (no such run?)"

    def finish(self, flush_s: float) -> int:
        return 0  # nothing is ever pending


class Recording(RunRecorder):
    """A :class:`RunRecorder` of ``run_id`` whose records reach the registry before each call returns.

    The journal is written in the run's folder (``run_dir``) where it exists (a test may name one that does
    not), else in a folder of the test's own CRLAB_HOME. It numbers its records after the last one the
    registry has applied, as a run's journal does, so several recordings of one run (or a recording after
    the run's own journal) go in order.
    """

    def __init__(self, registry: Registry, run_id: str) -> None:
        run = registry.get_run(run_id)
        folder = run.run_dir if _is_dir(run.run_dir) else _scratch(run.id)
        self.journal = Journal(folder, run.attempt)
        self.journal.seq = max(self.journal.seq, run.journal_seq)
        self.writer = _ApplyNow(registry.engine, run.id)
        self.say = lambda _message: None

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_dir(path: str | None) -> bool:
    return bool(path and Path(path).is_dir())


def _scratch(run_id: str) -> Path:
    home = os.environ.get("CRLAB_HOME") or tempfile.gettempdir()  # tests: a fresh CRLAB_HOME each
    return Path(home) / "journals" / run_id

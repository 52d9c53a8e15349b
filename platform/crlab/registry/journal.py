"""A run's journal: every record a run makes goes first to an append-only file in its folder, then to the
registry, so a run never waits on the registry and never loses a record when the registry is away.

``journal.jsonl`` in the run's folder holds one JSON record per line, numbered by ``seq`` (1, 2, ... over
every attempt of the run). Kinds:

- ``metrics``: ``step`` and ``values`` (rows of these keys at or after the step are replaced, so a resumed
  run's replayed steps never duplicate; see :mod:`crlab.registry.summaries`);
- ``event``: ``event`` (its kind), ``payload`` and ``step``;
- ``checkpoint``: a complete checkpoint at ``step`` (``path``), the paths still ``kept`` on disk (the
  registry forgets the others) and the ``best`` step, if it changed;
- ``best``: the checkpoint at ``step`` became the run's best (an evaluation done after a resume);
- ``status``: how an attempt ended (``status``, ``error``).

**Exactly once.** The registry keeps, per run, the number of the last record it has applied
(``runs.journal_seq``). :func:`apply_records` applies the records after it and moves it on in one
transaction, under the run row's lock, so any number of writers (the run's own background writer, a sweep
settling the run, ``platform runs sync``) may replay the same journal, in any order, and each record is
applied once.

Applying records is the registry's only write path for metrics, checkpoints and the best flag: nothing
else in the product writes them, and the tests write them the same way (a run's recorder, applied at once).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from crlab.errors import DiskFull
from crlab.registry import db
from crlab.registry.entities import RunStatus
from crlab.registry.models import CheckpointRow, EventRow, RunRow
from crlab.registry.summaries import write_metrics

JOURNAL = "journal.jsonl"


def journal_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / JOURNAL


def read_records(path: Path, after: int = 0) -> Iterator[dict[str, Any]]:
    """The journal's records numbered above ``after``, in order; a line cut short by a kill is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the process died while writing it: it was never acknowledged to anyone
            if record.get("seq", 0) > after:
                yield record


def last_seq(path: Path) -> int:
    """The number of the journal's last record (0: none)."""
    return max((r["seq"] for r in read_records(path)), default=0)


class Journal:
    """The append side: numbers records and writes each as one line, flushed to the OS at once (a killed
    process loses nothing it has written)."""

    def __init__(self, run_dir: str | Path, attempt: int) -> None:
        self.path = journal_path(run_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.attempt = attempt
        self.seq = last_seq(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        if self._file.tell() and not _ends_with_newline(self.path):
            self._file.write("\n")  # a line cut short by a kill stays on its own

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The next record, numbered, not yet written (:meth:`append` writes it)."""
        self.seq += 1
        return {"seq": self.seq, "kind": kind, "attempt": self.attempt, "time": _now_iso(), **fields}

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write the next record; a full disk is :class:`~crlab.errors.DiskFull`, one line."""
        record = self.record(kind, **fields)
        line = json.dumps(record, separators=(",", ":")) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            broken, self._file = self._file, self.path.open("a", encoding="utf-8")  # a cut line reached it
            with contextlib.suppress(OSError):
                broken.close()
            raise DiskFull(
                f"no space left for the journal {self.path}: free space there, then "
                f"`platform resume {self.path.parent.name}` (its newest checkpoint is intact)"
            ) from None
        return record

    def close(self) -> None:
        if not self._file.closed:
            with contextlib.suppress(OSError):  # a full disk: what could be written is written
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()


def apply_records(engine: Any, run_id: str, records: Iterable[dict[str, Any]]) -> int:
    """Apply the records the registry has not yet applied, in one transaction; returns how many it did."""
    with db.session_scope(engine) as s:
        row = s.scalars(select(RunRow).where(RunRow.id == run_id).with_for_update()).first()
        if row is None:
            return 0  # the run was deleted: nothing to keep its records for
        done, applied = row.journal_seq or 0, 0
        for record in records:
            if record["seq"] <= done:
                continue
            _APPLY[record["kind"]](s, row, record)
            done, applied = record["seq"], applied + 1
        row.journal_seq = done
        return applied


def replay(engine: Any, run_id: str, run_dir: str | None) -> int:
    """Send what the run's journal holds and the registry lacks; returns the number of records sent."""
    if not run_dir or not journal_path(run_dir).exists():
        return 0
    return apply_records(engine, run_id, list(read_records(journal_path(run_dir))))


def replay_pending(engine: Any) -> int:
    """Send the unsent records of every run the registry still has ``running`` whose journal is on this
    machine (a run that ended while the registry was away says how it ended here); returns how many."""
    with db.session_scope(engine) as s:
        query = select(RunRow.id, RunRow.run_dir, RunRow.journal_seq).where(
            RunRow.status == RunStatus.RUNNING.value
        )
        running = s.execute(query).all()
    sent = 0
    for run_id, run_dir, done in running:
        try:
            if run_dir and last_seq(journal_path(run_dir)) > (done or 0):
                sent += replay(engine, run_id, run_dir)
        except (OSError, ValueError, KeyError) as exc:  # one unreadable journal must not lock everyone out
            print(f"warning: cannot replay the journal of run {run_id}: {exc}", file=sys.stderr)
    return sent


def unsent(run_dir: str | None, journal_seq: int) -> int:
    """How many records of the run's journal the registry has not applied."""
    if not run_dir:
        return 0
    return sum(1 for _ in read_records(journal_path(run_dir), after=journal_seq))


# -- applying one record ------------------------------------------------------------------------------
def _metrics(s: Any, row: RunRow, r: dict[str, Any]) -> None:
    write_metrics(s, row.id, int(r["step"]), r["values"], _time(r))


def _event(s: Any, row: RunRow, r: dict[str, Any]) -> None:
    add_event(s, row.id, r["event"], r.get("payload"), r.get("step"), _time(r))


def _checkpoint(s: Any, row: RunRow, r: dict[str, Any]) -> None:
    step, path = int(r["step"]), str(r["path"])
    _upsert_checkpoint(s, row.id, step, path, _time(r))
    if r.get("kept") is not None:
        kept = [str(p) for p in r["kept"]]
        s.execute(
            delete(CheckpointRow).where(CheckpointRow.run_id == row.id, CheckpointRow.path.not_in(kept))
        )
    if r.get("best") is not None:
        _flag_best(s, row.id, int(r["best"]))


def _best(s: Any, row: RunRow, r: dict[str, Any]) -> None:
    _flag_best(s, row.id, int(r["step"]))


def _status(s: Any, row: RunRow, r: dict[str, Any]) -> None:
    if r.get("attempt", row.attempt) != row.attempt:
        return  # an older attempt's ending, replayed after a newer attempt took the run: not its status
    end_attempt(row, r["status"], r.get("error"), _time(r))


_APPLY = {"metrics": _metrics, "event": _event, "checkpoint": _checkpoint, "best": _best, "status": _status}


def add_event(
    s: Any, run_id: str, kind: str, payload: dict[str, Any] | None, step: int | None, when: datetime
) -> EventRow:
    """An event of the run (a journal's ``event`` record, or ``Registry.log_event``)."""
    row = EventRow(run_id=run_id, step=step, kind=kind, payload=payload or {}, time=when)
    s.add(row)
    return row


def end_attempt(row: RunRow, status: RunStatus | str, error: str | None, when: datetime) -> None:
    """The run's attempt ended ``status`` (a journal's ``status`` record, or ``Registry.finish_run``)."""
    row.status = RunStatus(status).value
    row.error, row.ended_at, row.heartbeat_at = error, when, when


def _upsert_checkpoint(s: Any, run_id: str, step: int, path: str, now: datetime) -> None:
    """Insert or update the complete checkpoint of ``run_id`` at ``step`` (its ``best`` flag is kept)."""
    row = s.scalars(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.step == step)
    ).first()
    if row is None:
        row = CheckpointRow(run_id=run_id, step=step, path=path, complete=True, created_at=now, best=False)
        s.add(row)
    row.path, row.complete = path, True
    s.flush()


def _flag_best(s: Any, run_id: str, step: int) -> None:
    """Flag the checkpoint at ``step`` as the run's best and no other; nothing changes when there is none
    at ``step``."""
    rows = {r.step: r for r in s.scalars(select(CheckpointRow).where(CheckpointRow.run_id == run_id))}
    if step not in rows:
        return
    for other in rows.values():
        if other.best and other.step != step:
            other.best = False
    s.flush()  # the old best is cleared before the new one is set (one best per run, an index)
    rows[step].best = True
    s.flush()


def _time(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["time"])


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"

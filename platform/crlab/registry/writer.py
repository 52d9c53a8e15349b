"""What a training run says to the registry, without ever waiting on it.

:class:`RunRecorder` is the run's one write path (rank 0's): each record is appended to the run's journal
(:mod:`crlab.registry.journal`) and handed to a background thread, :class:`RegistryWriter`, that sends what
is pending in one transaction, retrying with backoff while the registry is unreachable (a PostgreSQL
restart, a network blip, a SQLite file locked by another writer). The run keeps training meanwhile and says
so once in its log; when the registry is back, the backlog goes in one go.

When the run ends, :meth:`RunRecorder.close` waits up to ``flush_s`` for the backlog. What is still unsent
then stays in the journal: the sweep that settles the run, the next command that opens the registry, or
``platform runs sync RUN`` sends it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crlab.errors import DiskFull
from crlab.registry.journal import Journal, apply_records
from crlab.registry.retry import BACKOFF_S, reason

BATCH = 500  # records per transaction (a long outage's backlog goes in several)
FLUSH_S = 120.0  # how long a run that ends waits for an unreachable registry before leaving its journal


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RegistryWriter(threading.Thread):
    """Sends the records handed to it, in order, with retries; see the module docstring."""

    def __init__(
        self, engine: Any, run_id: str, journal_file: Path, say: Callable[[str], None] = _say
    ) -> None:
        super().__init__(daemon=True, name=f"registry-writer-{run_id}")
        self.engine, self.run_id, self.journal_file, self.say = engine, run_id, journal_file, say
        self.pending: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.down_since: float | None = None
        self.deadline = float("inf")  # set when the run finishes: retry until then

    def put(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.pending.append(record)
        self.wake.set()

    def backlog(self) -> int:
        with self.lock:
            return len(self.pending)

    def run(self) -> None:
        failures = 0
        while True:
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            last = self.stopping.is_set()  # seen before the batch is taken: nothing is put after it
            if self._send():
                failures = 0
                if last and not self.backlog():
                    return
                if self.backlog():
                    self.wake.set()  # the next batch of a backlog at once
                continue
            left = self.deadline - time.monotonic()
            if self.stopping.is_set() and left <= 0:
                return
            time.sleep(min(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)], max(left, 0.0)))
            failures += 1

    def _send(self) -> bool:
        with self.lock:
            batch = self.pending[:BATCH]
        if not batch:
            return True
        try:
            apply_records(self.engine, self.run_id, batch)
        except Exception as exc:  # the registry is away: the records wait in the journal and here
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.say(
                    f"registry unreachable ({reason(exc)}): training goes on; records are kept in "
                    f"{self.journal_file} and sent when it is back"
                )
            return False
        with self.lock:
            del self.pending[: len(batch)]
        if self.down_since is not None:
            self.say(
                f"registry reachable again after {time.monotonic() - self.down_since:.0f} s: sent the backlog"
            )
            self.down_since = None
        return True

    # -- the end of the run --------------------------------------------------------------------------
    def finish(self, flush_s: float) -> int:
        """Send what is pending, for up to ``flush_s`` while the registry is away; returns what is left."""
        self.deadline = time.monotonic() + flush_s
        self.stopping.set()
        self.wake.set()
        self.join(timeout=flush_s + 30.0)
        return self.backlog()


class RunRecorder:
    """The run's records: journal first, registry in the background (rank 0 only)."""

    def __init__(
        self, engine: Any, run_id: str, run_dir: str, attempt: int, say: Callable[[str], None] = _say
    ) -> None:
        self.journal = Journal(run_dir, attempt)
        self.writer = RegistryWriter(engine, run_id, self.journal.path, say)
        self.say = say
        self.writer.start()

    def _put(self, kind: str, **fields: Any) -> None:
        self.writer.put(self.journal.append(kind, **fields))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if values:
            self._put("metrics", step=step, values=values)

    def event(self, kind: str, payload: dict[str, Any] | None, step: int | None) -> None:
        self._put("event", event=kind, payload=payload or {}, step=step)

    def checkpoint(self, step: int, path: str, kept: list[str], best: int | None) -> None:
        """A complete checkpoint at ``step``; the registry forgets those not in ``kept`` (pruned on disk)."""
        self._put("checkpoint", step=step, path=path, kept=kept, best=best)

    def best(self, step: int) -> None:
        """The checkpoint at ``step`` (already recorded) is now the run's best."""
        self._put("best", step=step)

    def status(self, status: str, error: str | None) -> None:
        try:
            self._put("status", status=status, error=error)
        except DiskFull:  # the registry still learns how the run ended, if it is reachable
            self.writer.put(self.journal.record("status", status=status, error=error))

    def close(self, flush_s: float = FLUSH_S) -> int:
        """Flush for up to ``flush_s``; returns the number of records left unsent (said, with the fix)."""
        left = self.writer.finish(flush_s)
        self.journal.close()
        if left:
            self.say(
                f"registry still unreachable: {left} record(s) wait in {self.journal.path}; the next command "
                "that opens the registry sends them (or `platform runs sync`)"
            )
        return left

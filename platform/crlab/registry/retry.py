"""Riding out registry outages: which errors mean "unreachable", retries with backoff, and how long this
process has seen the registry healthy.

Every :class:`~crlab.registry.store.Registry` call goes through its :class:`Reachability`. By default
(``retry_s`` 0, what one-shot commands use) an unreachable registry fails the call at once, as before. A
sweep or a search sets ``retry_s`` (``executor.registry_retry_s``, 10 minutes by default): its calls are
retried with backoff while the registry is unreachable, ``on_change`` is told when an outage starts and ends
(the live view says "registry unreachable, retrying"), and only after ``retry_s`` does the call fail, with
one line (:class:`~crlab.errors.RegistryUnreachable`, exit code 3).

``healthy_for()`` is how long this process has seen the registry answer without a break. A run whose
heartbeat is older than the grace period may have gone quiet only because the registry was away (every
heartbeat fails during an outage), so a claimer takes it over only after watching the registry healthy for a
whole grace period itself (:func:`crlab.registry.lifecycle.is_alive`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from crlab.errors import RegistryUnreachable

T = TypeVar("T")
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # then every 15 s
DEFAULT_RETRY_S = 600.0  # what a sweep rides out before it stops (its cells carry on)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the registry cannot be reached now (a retry may succeed), not that the call is
    wrong: a refused or dropped connection, a server shutting down, a SQLite file locked by another writer."""
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if not isinstance(exc, DBAPIError) and cause is not None:
        return unreachable(cause)  # Optuna's StorageInternalError wraps SQLAlchemy's error
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    if exc.orig is not None and type(exc.orig).__module__ == "sqlite3":
        text = str(exc.orig).lower()  # not "no such table", a bad file, ...: those are no outage
        return "locked" in text or "busy" in text
    return True  # PostgreSQL's OperationalError: connection refused, closed, server shutting down


def reason(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's wrapping."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


class Reachability:
    """One process's view of whether its registry answers; see the module docstring."""

    def __init__(self, retry_s: float = 0.0) -> None:
        self.retry_s = retry_s
        self.on_change: Callable[[str | None], None] | None = None  # reason when down, None when back
        self.healthy_since: float = time.monotonic()
        self.down_since: float | None = None

    def healthy_for(self) -> float:
        """Seconds since this process last saw the registry fail (0 while it is failing)."""
        return 0.0 if self.down_since is not None else time.monotonic() - self.healthy_since

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        tries = 0
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                self._down(exc)
                waited = time.monotonic() - (self.down_since or time.monotonic())
                if waited >= self.retry_s:
                    if self.retry_s <= 0:
                        raise
                    raise RegistryUnreachable(
                        f"registry unreachable for {waited:.0f} s ({reason(exc)}); gave up (running cells "
                        "carry on: rerun the same command once the registry is back)"
                    ) from None
                time.sleep(min(BACKOFF_S[min(tries, len(BACKOFF_S) - 1)], self.retry_s - waited))
                tries += 1
                continue
            self._up()
            return out

    def _down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            if self.on_change is not None:
                self.on_change(reason(exc))

    def _up(self) -> None:
        if self.down_since is not None:
            self.down_since = None
            self.healthy_since = time.monotonic()
            if self.on_change is not None:
                self.on_change(None)

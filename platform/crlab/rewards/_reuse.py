"""Tests one after another in one test process of :mod:`crlab.rewards.sandbox` (standard library only).

Shipped into the sandbox after ``_harness.py``, whose names it uses. A test process forked by the fork
server (``_runner.Runner``) ends in :func:`serve_tests`: it runs the tests the server sends, each with
:func:`_harness.run_case` in a fresh copy of the program's namespace and with fresh stdio and result fds,
and after each one settles (:func:`_settle`): it drops the test's objects, restores what a test commonly
changes and a fresh process would not have (recursion limit, gc, decimal context, timers) and checks the
rest of the process-wide state against a snapshot taken before the first test. The server runs another
test in the process only if it settled and the server's own checks pass (see the sandbox docstring).
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import os
import resource
import sys

with contextlib.suppress(ImportError):  # on the host; inside the sandbox the harness source precedes this
    from ._harness import (
        CaseStatus,
        Harness,
        TestKind,
        _all,
        _dict,
        _exit,
        _fstat,
        _len,
        _stdio,
        _write,
        run_case,
    )

# statuses after which the process goes on
_REUSABLE = frozenset({CaseStatus.OK, CaseStatus.EXC, CaseStatus.EXIT, CaseStatus.BADTYPE, CaseStatus.ASSERT})
_STDIO = ("stdin", "stdout", "stderr", "__stdin__", "__stdout__", "__stderr__")
_RLIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))


def _modules() -> tuple[list, list]:
    """The imported modules, in order, and the size of each one's namespace: a module imported, replaced or
    removed, or a name added to or deleted from any module (``math.memo = ...``), shows."""
    modules = list(sys.modules.values())
    return modules, [_len(getattr(m, "__dict__", ())) for m in modules]


def _facts(keep: tuple, signals: tuple) -> tuple:
    """Process state that a test must leave as it found it (compared after every test, not restored):
    modules, umask, process group, session, directory, open fds, priority and CPU affinity, signal handlers,
    mask and pending signals, rlimits, and what gc, decimal, import and warnings keep process-wide."""
    import _signal
    import decimal
    import signal

    umask = os.umask(0o022)
    os.umask(umask)
    fds = set(map(int, os.listdir("/proc/self/fd")))
    extra = sorted(fds.difference(keep))  # one extra fd is the listing's own: the lowest free number
    fds_ok = not extra or (_len(extra) == 1 and _all(i in fds for i in range(extra[0])))
    warnings = sys.modules.get("warnings")
    return (
        _modules(),
        (umask, os.getpgrp(), os.getsid(0), os.getcwd(), fds_ok, os.fstat(keep[-1]).st_ino),
        (os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), tuple(os.sched_getaffinity(0))),
        tuple(map(_signal.getsignal, signals)),
        (signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.sigpending()),
        tuple(map(resource.getrlimit, _RLIMITS)),
        (gc.get_debug(), _len(gc.garbage), _len(gc.callbacks), repr(decimal.DefaultContext)),
        (tuple(sys.path), tuple(sys.meta_path), tuple(sys.path_hooks), tuple(sys.argv)),
        tuple(warnings.filters) if warnings else None,
    )


def _snapshot(keep: tuple) -> dict:
    """The state to return to after every test, taken in the test process before its first test."""
    stdio = [getattr(sys, name) for name in _STDIO]  # the server's: kept alive (finalizing costs time)
    for name in _STDIO:
        setattr(sys, name, None)
    import _signal

    digits = getattr(sys, "get_int_max_str_digits", lambda: None)()
    signals = tuple(_signal.valid_signals())  # (signal.valid_signals makes enum members: slower)
    gc.freeze()  # the server's objects: never the tests' garbage, so later collections skip them
    return {
        "stdio": stdio,
        # the builtins in order (a name added, removed or rebound shows); the names are not touched: fewer
        # pages of the server's memory copied into this process
        "builtins": list(builtins.__dict__.values()),
        "environ": _dict(os.environ._data),  # (comparing os.environ itself runs Mapping.__eq__: slower)
        "values": (sys.getrecursionlimit(), digits, sys.getswitchinterval(), gc.get_threshold()),
        "facts": _facts(keep, signals),
        "keep": keep,
        "signals": signals,
    }


def _restore(snap: dict) -> None:
    """Undo what a test may have changed and a fresh process would not have: values set through sys, gc
    and decimal (common in competitive programming: recursion limit, gc.disable, precision), timers."""
    import decimal
    import signal

    limit, digits, switch, threshold = snap["values"]
    sys.settrace(None)
    sys.setprofile(None)
    sys.setrecursionlimit(limit)
    if digits is not None:
        sys.set_int_max_str_digits(digits)
    sys.setswitchinterval(switch)
    gc.enable()
    gc.set_threshold(*threshold)
    decimal.setcontext(decimal.Context())
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):  # alarm() is ITIMER_REAL
        signal.setitimer(timer, 0)
    signal.set_wakeup_fd(-1)


def _settle(snap: dict) -> bool:
    """After a test: drop its objects (finalizers run now, not in the next test), restore, then check that
    the process is as a fresh one would be. False: the server must not run another test in it."""
    try:
        for name in _STDIO:
            setattr(sys, name, None)
        gc.collect()
        _restore(snap)
        return (
            list(builtins.__dict__.values()) == snap["builtins"]
            and os.environ._data == snap["environ"]
            and _facts(snap["keep"], snap["signals"]) == snap["facts"]
        )
    except BaseException:
        return False


def _take_fds(fds: list, targets: tuple) -> None:
    """Put the received fds at ``targets``. They arrive at the lowest free numbers, in order, so placing
    them in order never overwrites one still to be placed (targets 0, 1, 2, then a high number)."""
    for src, dst in zip(fds, targets, strict=True):
        if src != dst:
            os.dup2(src, dst)
    for src in fds:
        if src not in targets:
            os.close(src)


def serve_tests(job: dict, prepared: tuple, rfd: int, conn, limit: int) -> None:
    """The loop of a test process (forked, limited and unprivileged already); never returns.

    Each request from the server on ``conn`` (a SOCK_SEQPACKET socket) is a test index, its nonce and four
    fresh fds (stdin, stdout, stderr, result). The test runs in a fresh copy of the program's namespace;
    then "D" (done: exit status, stdout size) goes back, then the process settles and reports "R1" (may run
    another test) or "R0" (exits). See the sandbox docstring for what the server checks besides.
    """
    import socket  # the fork server imported it (a fresh baseline interpreter never gets here)

    sock = conn.fileno()
    code, check, template = prepared
    snap = _snapshot((0, 1, 2, rfd, sock))
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(conn, 64, 4)
        except OSError:
            _exit(0)
        if _len(msg) != 36 or _len(fds) != 4:
            _exit(0)
        _take_fds(fds, (0, 1, 2, rfd))
        _stdio()
        index, nonce = int.from_bytes(msg[:4], "big"), msg[4:].decode("ascii")
        args = job["inputs"][index] if job["kind"] != TestKind.ASSERT else None
        try:
            status = run_case(job, args, rfd, nonce, limit, (code, check, _dict(template)))
        except BaseException:  # the harness failed (its result fd closed...): end as a lone interpreter would
            _exit(1)
        # what a process that ran this test alone would exit with
        exit_code = 0 if status == CaseStatus.OK else 1
        try:  # the output a fresh process would have left: the server ignores what is written after this
            size = _fstat(1).st_size
        except BaseException:
            size = 1 << 62  # fd 1 is gone: the server takes its own copy's size
        try:
            _write(sock, b"D" + (b"1" if exit_code else b"0") + size.to_bytes(8, "big"))
        except BaseException:  # the program closed or replaced the socket: end as a lone test would
            _exit(exit_code)
        clean = status in _REUSABLE and job["harness"] == Harness.STRICT and _settle(snap)
        _write(sock, b"R1" if clean else b"R0")
        if not clean:
            _exit(0)

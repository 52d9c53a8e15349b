"""The child-side harness of :mod:`crlab.rewards.sandbox`: runs one test of an untrusted program.

Standard library only, self-contained: the fork server is shipped into the sandbox as this source followed
by ``_reuse.py``, ``_runner.py`` and ``_server.py``. A test process runs tests with :func:`run_case` (one
after another, see ``_reuse.serve_tests``). Also runnable as ``python -I -S _harness.py single <result fd>
<job fd>``: one test in a fresh interpreter, used by the benchmark's one-interpreter-per-test baseline.

The harness runs in the same process as the program, so it defends only against cheap tricks: it records
the outcome with a per-test nonce on a randomly numbered fd only after the program (and, for assert tests,
``check``) returned; it captures the builtins it needs before the program runs; ``check`` gets pristine
builtins; return values must be made of exact builtin types. See the sandbox docstring for what remains.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import resource
import sys
from enum import StrEnum

# LeetCode-style solutions rely on these names being predefined (List, Optional, deque, heappush, ...).
PRELUDE = (
    "from typing import *\nfrom collections import *\nfrom heapq import *\nfrom bisect import *\n"
    "from itertools import *\nfrom functools import *\nfrom math import *\n"
    "import collections, heapq, bisect, itertools, functools, math, string, re, operator\n"
)
CHILD_ENV_PATH = "/usr/bin:/bin"


# ---------------------------------------------------------------- what the host and the fork server share
# Defined here, the first module of the fork server's source (nothing of crlab is importable in the sandbox);
# the host's modules import them from here. StrEnum members equal the plain strings of the JSON frames.
class TestKind(StrEnum):
    """The kind of a test spec (:mod:`crlab.rewards.spec`): stdin text, a function call, or a check()."""

    __test__ = False  # not a test case for test collectors (its name starts with Test)
    STDIN = "stdin"
    FUNCTIONAL = "functional"
    ASSERT = "assert"


class Harness(StrEnum):
    """How tests run: strict (the sandbox's rules) | lcb (LiveCodeBench's evaluator: _suite.py, lcb.py) |
    authors (the authors' training reward, verl's prime_code: _prime.py, prime.py)."""

    STRICT = "strict"
    LCB = "lcb"
    AUTHORS = "authors"


class Verdict(StrEnum):
    """The verdict of one test, as the host reports it."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_EXCEEDED = "memory_exceeded"
    NOT_RUN = "not_run"  # the lcb harness: an earlier test failed, so (as LiveCodeBench) this one did not run


class CaseStatus(StrEnum):
    """How one test ended inside its process, as its result record (``"s"``) says."""

    OK = "ok"
    EXC = "exc"  # an exception
    EXIT = "exit"  # SystemExit with a failing code
    MEMORY = "memory"
    BADTYPE = "badtype"  # a return value not made of plain JSON types
    ASSERT = "assert"  # check() failed
    COMPILE = "compile"
    OUTLIMIT = "outlimit"  # the record itself is over the output limit


def child_env(cwd: str) -> dict:
    """The whole environment of a test: built from scratch, nothing inherited from the host."""
    return {"PATH": CHILD_ENV_PATH, "LANG": "C.UTF-8", "HOME": cwd, "TMPDIR": cwd}


# ---------------------------------------------------------------- limits (child side)
def apply_limits(cfg: dict) -> None:
    """Per-execution rlimits: address space, CPU seconds, processes, file size, open files, no core.
    ``memory_mb`` None (the ``lcb`` harness): no address-space cap, and the stack limit is left as it is."""
    cpu = int(cfg["time_limit"]) + 2
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_NPROC, cfg["nproc"], cfg["nproc"]),
        (resource.RLIMIT_FSIZE, cfg["max_output"], cfg["max_output"]),
        (resource.RLIMIT_NOFILE, cfg["nofile"], cfg["nofile"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if cfg["memory_mb"] is not None:
        mem = int(cfg["memory_mb"]) << 20
        wanted += [
            (resource.RLIMIT_AS, mem, mem),
            (resource.RLIMIT_STACK, min(mem, 256 << 20), min(mem, 256 << 20)),
        ]
    for res, soft, hard in wanted:
        old_hard = resource.getrlimit(res)[1]
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(res, (soft, hard))


def _drop_privileges(uid: int | None) -> None:
    if uid is None or os.geteuid() != 0:
        return
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        os._exit(72)


# ---------------------------------------------------------------- harness (runs the untrusted program)
class _NotPlain(TypeError):
    pass


# Captured when the harness is imported (before any program runs), so patching builtins cannot change them.
# Types are matched by id: a metaclass with a custom __eq__/__hash__ cannot pose as int.
_type, _id, _all, _json_dumps = type, id, all, json.dumps
_exec, _compile, _dict, _len, _enc = exec, compile, dict, len, json.encoder.encode_basestring_ascii
_json_loads, _write, _exit, _fstat = json.loads, os.write, os._exit, os.fstat
_JSON_SCALARS = frozenset(map(id, (type(None), bool, int, float, str)))
_SCALARS = frozenset(map(id, (type(None), bool, int, float, complex, str, bytes)))
_SEQUENCES = frozenset(map(id, (list, tuple, set, frozenset)))
_PRISTINE_BUILTINS = dict(builtins.__dict__)


def _plain_json(v):
    """Return ``v`` if it is built from exact JSON types only (no subclasses, no custom __eq__)."""
    t = _type(v)
    if _id(t) in _JSON_SCALARS:
        return v
    if t is list or t is tuple:
        return [_plain_json(x) for x in v]
    if t is dict and _all(_type(k) is str for k in v):
        return {k: _plain_json(x) for k, x in v.items()}
    raise _NotPlain(f"return value contains a {t.__name__!s}, not a plain JSON type")


def _copy_plain(v):
    """A deep copy of ``v`` with exact builtin types; anything else (e.g. an always-equal object) raises."""
    t = _type(v)
    if _id(t) in _SCALARS:
        return v
    if _id(t) in _SEQUENCES:
        return t(_copy_plain(x) for x in v)
    if t is dict:
        return {_copy_plain(k): _copy_plain(x) for k, x in v.items()}
    raise _NotPlain(f"candidate returned a {t.__name__!s}, not a plain builtin value")


def _guard(fn):
    def candidate(*args, **kwargs):
        return _copy_plain(fn(*args, **kwargs))

    return candidate


def _brief(e: BaseException) -> str:
    try:
        return f"{type(e).__name__}: {e!s}"[:300]
    except BaseException:
        return "exception"


def _stdio() -> None:
    """Fresh stdio objects over fds 0-2 (a forked child must not reuse the server's buffers)."""
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), "utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)), "utf-8"
    )
    err = io.BufferedWriter(io.FileIO(2, "w", closefd=False))
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(err, "utf-8", "backslashreplace", write_through=True)


def _call_target(ns: dict, fn_name: str, args: list):
    sol = ns.get("Solution")
    if isinstance(sol, type) and hasattr(sol, fn_name):
        target = getattr(sol(), fn_name)
    elif fn_name in ns:
        target = ns[fn_name]
    else:
        raise NameError(f"function {fn_name!r} is not defined")
    return _json_dumps(_plain_json(target(*args)))


def namespace(kind: str) -> dict:
    """The program's globals: ``__main__`` for stdin programs; LeetCode's names predefined for functional."""
    ns = {"__name__": "__main__" if kind == TestKind.STDIN else "__solution__", "__builtins__": builtins}
    if kind == TestKind.FUNCTIONAL:
        exec(PRELUDE, ns)
    return ns


def prepare(job: dict, ns: dict) -> tuple[tuple | None, str]:
    """Compile the program (and the check) before anything runs. -> ((code, check, ns), "") or (None, error).

    Compiling executes nothing, so the fork server does it once per program; each test then runs the code
    in a fresh copy of ``ns`` (a template that no test touches)."""
    try:
        code = compile(job["program"], "<solution>", "exec")
        check = compile(job["check_code"], "<check>", "exec") if job["kind"] == TestKind.ASSERT else None
    except BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError
        return None, _brief(e)
    return (code, check, ns), ""


def _attempt(job: dict, code, check, ns: dict, args_text: str | None) -> tuple[str, str | None, str]:
    """Run the program (and its functional call or assert check). Returns (status, value, error)."""
    kind = job["kind"]  # what it is, decided before the program can patch anything
    functional, asserts, stdin = kind == TestKind.FUNCTIONAL, kind == TestKind.ASSERT, kind == TestKind.STDIN
    try:
        if functional:
            args = _json_loads(args_text)
        exec(code, ns)
        if functional:
            return CaseStatus.OK, _call_target(ns, job["fn_name"], args), ""
        if asserts:  # check() sees the original builtins, whatever the program patched
            check_ns = _dict(ns)
            check_ns["__builtins__"] = _dict(_PRISTINE_BUILTINS)
            _exec(check, check_ns)
            check_ns["check"](_guard(check_ns[job["entry_point"]]))
        return CaseStatus.OK, None, ""
    except SystemExit as e:
        code_ = e.code
        if stdin and (code_ is None or (type(code_) is int and code_ == 0)):
            return CaseStatus.OK, None, ""
        return CaseStatus.EXIT, None, "SystemExit"
    except MemoryError:
        return CaseStatus.MEMORY, None, ""
    except _NotPlain as e:
        return CaseStatus.BADTYPE, None, _brief(e)
    except AssertionError as e:
        return (CaseStatus.ASSERT if asserts else CaseStatus.EXC), None, _brief(e)
    except BaseException as e:
        return CaseStatus.EXC, None, _brief(e)


def _record(nonce: str, status: str, value: str | None = None, err: str = "") -> bytes:
    """The result record, built from strings only (json.dumps would consult patchable builtins)."""
    v = "null" if value is None else _enc(value)
    return (
        '{"n": ' + _enc(nonce) + ', "s": ' + _enc(status) + ', "v": ' + v + ', "e": ' + _enc(err) + "}"
    ).encode()


def run_case(job: dict, args_text: str | None, rfd: int, nonce: str, limit: int, prepared=None) -> str:
    """Run one test in this (already limited) process and write its result record to ``rfd``. -> status.

    ``prepared`` comes from :func:`prepare` in the fork server; without it (a fresh interpreter) the stdio
    objects and the compiled program are made here. The record carries ``nonce``; for assert tests it is
    written only after ``check`` returned, so an early ``exit(0)`` or ``os._exit(0)`` is not a pass.
    """
    fallback = {s: _record(nonce, s) for s in (CaseStatus.MEMORY, CaseStatus.EXC, CaseStatus.OUTLIMIT)}
    error = ""
    if prepared is None:
        _stdio()
        prepared, error = prepare(job, namespace(job["kind"]))
    stdout = sys.stdout
    # lcb, authors: every test in this process, run by _suite.py (later in the shipped source)
    if job["harness"] != Harness.STRICT:
        status, value, err = suite_case(job)  # noqa: F821
    elif prepared is None:
        status, value, err = CaseStatus.COMPILE, None, error
    else:
        status, value, err = _attempt(job, *prepared, args_text)
    if sys.stdout is not stdout:  # the program replaced sys.stdout: flush it, best effort, like exit does
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
    try:
        if not stdout.closed:
            stdout.flush()
    except MemoryError:
        status = CaseStatus.MEMORY
    except BaseException as e:
        if status == CaseStatus.OK:
            status, err = CaseStatus.EXC, _brief(e)
    try:
        record = _record(nonce, status, value, err)
        if _len(record) >= limit - 64:
            record = fallback[CaseStatus.OUTLIMIT]
    except MemoryError:
        record = fallback[CaseStatus.MEMORY]
    except BaseException:
        record = fallback[CaseStatus.EXC]
    _write(rfd, record)
    return status


def harness(job: dict, args_text: str | None, rfd: int, nonce: str, limit: int, prepared=None) -> None:
    """:func:`run_case`, then exit (0 for "ok"): one test, one process; never returns."""
    _exit(0 if run_case(job, args_text, rfd, nonce, limit, prepared) == CaseStatus.OK else 1)


def _site_builtins() -> None:
    """``exit``/``quit`` come from the site module, which ``-S`` skips; programs use them."""
    import site

    site.setquit()


def _single(rfd: int, jfd: int) -> None:
    blob = json.loads(os.pread(jfd, os.fstat(jfd).st_size, 0))
    os.close(jfd)
    _site_builtins()
    harness(blob["job"], blob["args"], rfd, blob["nonce"], blob["limit"])


if __name__ == "__main__" and sys.argv[1:2] == ["single"]:
    _single(int(sys.argv[2]), int(sys.argv[3]))

"""Whole-suite harnesses of :mod:`crlab.rewards.sandbox`: every test of a program in ONE test process, the
way another evaluator runs them (standard library only; shipped into the sandbox after ``_harness.py``).

``lcb``: LiveCodeBench's ``evaluation/testing_util.py`` (``run_test``, ``grade_stdio``,
``grade_call_based``; release as packaged in ``nvidia-livecodebench`` 26.3, the same code as
LiveCodeBench's ``lcb_runner`` at its v5/v6 releases). What a program sees there, and here:

* its prelude (:data:`LCB_PRELUDE`: ``from string/re/datetime/collections/heapq/bisect/copy/math/random/
  statistics/itertools/functools/operator/io/sys/json/builtins/typing import *``, those modules imported,
  recursion limit 50000); integer-to-string digits 50000; no address-space cap; numpy importable;
  ``quit`` and a few ``os``/``shutil``/``subprocess`` functions set to None, ``resource`` and others
  unimportable (its ``reliability_guard``); SIGALRM raising ``TimeoutException`` after the time limit of
  each test (an ``Exception``, so a bare ``except`` in the program swallows it, as there);
* stdin problems: a trailing ``if __name__ == '__main__':`` block is unwrapped, the top-level imports stay
  at module level and everything else becomes the body of ``wrapped_function()`` (both through
  ``ast.unparse``; a program ``ast`` cannot parse runs as it is). The module runs once; each test calls
  the function with ``sys.stdin`` a ``StringIO`` of the input, the ``read``/``readline``/``readlines`` of
  the previous ``sys.stdin`` object answering from the input too (so a module-level ``stdin`` from the
  prelude works, lines without their newline), stdout captured in a ``StringIO`` whose ``close`` takes one
  argument; ``SystemExit`` of any code ends the test normally;
* functional problems: the prelude and the program run once as a module; with ``class Solution`` in its
  text, ONE ``Solution()`` answers every test; each call's return value is sent to the host (a top-level
  tuple becomes a list there) and compared with ``==``;
* a compile error, an exception or a timeout ends the suite at that test (later ones are not run);
  ``SystemExit`` in a functional program, or any other ``BaseException``, ends the process: every test
  fails, as LiveCodeBench's global timeout counts them.

Return values travel as tagged JSON of exact builtin types (numpy scalars as their Python value): the host
rebuilds them and compares, so an expected output never enters the sandbox. The one place this differs
from LiveCodeBench: a value of any other type is a wrong answer here, where LiveCodeBench would call its
``__eq__`` (an always-equal object passes there).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import signal
import sys
import time
from enum import StrEnum

with contextlib.suppress(ImportError):  # on the host; inside the sandbox the harness source precedes this
    from ._harness import CaseStatus, Harness, TestKind, _brief, _json_dumps, _json_loads, _NotPlain


class ValueTag(StrEnum):
    """The type of a value in the tagged JSON that :func:`tag` writes and ``lcb.untag`` reads."""

    NONE = "n"
    BOOL = "b"
    STR = "s"
    INT = "i"
    FLOAT = "f"
    COMPLEX = "c"
    LIST = "l"
    TUPLE = "t"
    SET = "S"
    FROZENSET = "F"
    DICT = "d"


class EntryTag(StrEnum):
    """How one test of a whole-suite harness ended: the first item of its entry (see :func:`run_lcb`)."""

    OUTPUT = "o"  # printed this stdout (compared on the host)
    RETURNED = "r"  # returned this tagged value (compared on the host)
    UNSENDABLE = "x"  # returned a value that cannot be sent: a wrong answer
    TIMEOUT = "t"
    ERROR = "e"  # raised


_LCB_STAR = (
    "string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
    "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing",
)  # fmt: skip
LCB_PRELUDE = (
    "".join(f"from {m} import *\n" for m in _LCB_STAR)
    + "".join(f"import {m}\n" for m in _LCB_STAR[:-2])
    + "sys.setrecursionlimit(50000)\n"
)
LCB_DIGITS = 50000
_GUARDED_OS = (
    "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
    "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
    "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir",
)  # fmt: skip
_BLOCKED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")
_list, _tuple, _set, _frozenset, _hex = list, tuple, set, frozenset, hex


class TimeoutException(Exception):  # noqa: N818 (the name LiveCodeBench's timeout check looks for)
    pass


def _on_alarm(signum, frame):
    print("timeout occured: alarm went off")  # into the captured output, as there
    raise TimeoutException


def _lcb_guard() -> None:
    """What LiveCodeBench's ``reliability_guard`` changes that a program can notice."""
    import os
    import shutil
    import subprocess

    builtins.quit = None
    builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in _GUARDED_OS:
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in _BLOCKED_MODULES:
        sys.modules[name] = None


def unwrap_main(code: str) -> str:
    """The body of a last top-level ``if __name__ == '__main__':`` in place of the ``if`` (via ast.unparse)."""
    try:
        body = ast.parse(code).body
        last = body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            return ast.unparse(body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:
        pass
    return code


def as_function(code: str) -> str:
    """The prelude, the top-level imports, then everything else as the body of ``wrapped_function()``."""
    try:
        body = ast.parse(code).body
        imports = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
        others = [s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        no_args = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
        func = ast.FunctionDef(
            name="wrapped_function", args=no_args, body=others, decorator_list=[], lineno=-1
        )
        return LCB_PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(func)
    except Exception:
        return code


def tag(v):
    """A return value as tagged JSON data of exact builtin types; anything else raises ``_NotPlain``."""
    t = type(v)
    if v is None:
        return [ValueTag.NONE]
    if t is bool or t is str:
        return [ValueTag.BOOL if t is bool else ValueTag.STR, v]
    if t is int:
        return [ValueTag.INT, _hex(v)]
    if t is float:
        return [ValueTag.FLOAT, v.hex()]
    if t is complex:
        return [ValueTag.COMPLEX, v.real.hex(), v.imag.hex()]
    if t is _list or t is _tuple or t is _set or t is _frozenset:
        kinds = {
            _list: ValueTag.LIST,
            _tuple: ValueTag.TUPLE,
            _set: ValueTag.SET,
            _frozenset: ValueTag.FROZENSET,
        }
        return [kinds[t], [tag(x) for x in v]]
    if t is dict:
        return [ValueTag.DICT, [[tag(k), tag(x)] for k, x in v.items()]]
    if getattr(t, "__module__", "") == "numpy" and getattr(v, "ndim", None) == 0 and hasattr(v, "item"):
        return tag(v.item())
    raise _NotPlain(f"returned a {t.__name__!s}, not a plain builtin value")


def _failure(e: BaseException) -> list:
    try:
        text = repr(e)
    except BaseException:
        return [EntryTag.ERROR, "exception"]
    return [EntryTag.TIMEOUT] if "timeoutexception" in text.lower() else [EntryTag.ERROR, _brief(e)]


def _call_with_stdin(method, text: str):
    """``method()`` with stdin made of ``text``, as LiveCodeBench's ``call_method``; SystemExit ends it."""
    lines = iter(text.split("\n"))
    old, old_open = sys.stdin, builtins.open
    patched = {
        "read": lambda *a: text,
        "readline": lambda *a: next(lines),
        "readlines": lambda *a: text.split("\n"),
    }
    for name, fn in patched.items():
        setattr(old, name, fn)
    sys.stdin = io.StringIO(text)
    builtins.open = lambda *a, **k: io.StringIO(text)
    try:
        try:
            return method()
        except SystemExit:
            pass
    finally:
        builtins.open = old_open
        sys.stdin = old
        for name in patched:
            with contextlib.suppress(BaseException):
                delattr(old, name)


def _stdin_test(method, text: str, limit: float, failure=None) -> list:
    """``method`` called with ``text`` as its stdin within ``limit`` seconds: ``["o", stdout]``, or what
    ``failure`` (default :func:`_failure`) makes of the exception."""
    buf = io.StringIO()
    buf.close = lambda x: 1
    saved = sys.stdout
    sys.stdout = buf
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        _call_with_stdin(method, text)
        signal.setitimer(signal.ITIMER_REAL, 0)
        return [EntryTag.OUTPUT, buf.getvalue()]
    except Exception as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return (failure or _failure)(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = saved


def _functional_test(method, args_text: str, limit: float) -> list:
    args = _json_loads(args_text)  # (captured before any program ran)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        value = method(*args)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Exception as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return _failure(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        return [EntryTag.RETURNED, tag(value)]
    except _NotPlain as e:
        return [EntryTag.UNSENDABLE, _brief(e)]
    except RecursionError:
        return [EntryTag.UNSENDABLE, "return value nested too deeply to send"]


def _lcb_compile(job: dict, limit: float):
    """The module (or its one ``Solution()``) and the method each test calls, as ``compile_code``."""
    from types import ModuleType

    stdin = job["kind"] == TestKind.STDIN
    code = as_function(unwrap_main(job["program"])) if stdin else LCB_PRELUDE + "\n\n" + job["program"]
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        module = ModuleType("tmp_sol", "")
        exec(code, module.__dict__)
        compiled = module.Solution() if "class Solution" in code else module
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    name = "wrapped_function" if stdin else job["fn_name"]
    return getattr(compiled, name) if hasattr(compiled, name) else None


def run_lcb(job: dict) -> tuple[str, str | None, str]:
    """All tests of ``job`` as LiveCodeBench runs them. -> ("ok", JSON list of entries, "") where an entry
    is [tag, payload, seconds]: "o" stdout text, "r" tagged return value, "x" unsendable value, "t" timeout,
    "e" error; the list stops after the first "t" or "e" (a compile error is an "e" on the first test)."""
    limit = float(job["time_limit"])
    signal.signal(signal.SIGALRM, _on_alarm)
    sys.set_int_max_str_digits(LCB_DIGITS)
    _lcb_guard()
    entries = []
    try:
        method = _lcb_compile(job, limit)
        if method is None:
            raise AttributeError(
                "no " + ("wrapped_function" if job["kind"] == TestKind.STDIN else str(job["fn_name"]))
            )
    except Exception as e:
        return CaseStatus.OK, _json_dumps([[EntryTag.ERROR, _brief(e), 0.0]]), ""
    run = _stdin_test if job["kind"] == TestKind.STDIN else _functional_test
    for text in job["inputs"]:
        start = time.monotonic()
        entry = run(method, text, limit)
        entries.append(entry + [round(time.monotonic() - start, 6)])
        if entry[0] in (EntryTag.TIMEOUT, EntryTag.ERROR):
            break
    return CaseStatus.OK, _json_dumps(entries), ""


def suite_case(job: dict) -> tuple[str, str | None, str]:
    """:func:`run_lcb` (or ``_prime.run_authors``); what escapes it ends the suite: every test fails (a ``SystemExit`` in a functional
    program, ``KeyboardInterrupt``...), as the process that LiveCodeBench runs the tests in dies of it."""
    try:
        return run_lcb(job) if job["harness"] == Harness.LCB else run_authors(job)  # noqa: F821 (_prime.py)
    except SystemExit:
        return CaseStatus.EXIT, None, "SystemExit"
    except BaseException as e:
        return CaseStatus.EXC, None, _brief(e)

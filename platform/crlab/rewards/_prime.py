"""The ``authors`` harness of :mod:`crlab.rewards.sandbox`: tests run as the authors' training reward
runs them (standard library only; shipped into the sandbox after ``_suite.py``, whose functions it uses).

verl's ``utils/reward_score/prime_code/testing_util.py`` (``run_test``), in the copy the authors vendored
with their release (the same code as the ``verl`` wheel 0.9.1 but for its module loader): in a process of
its own, the program sees

* the prelude (:data:`AUTHORS_PRELUDE`: LiveCodeBench's 18 star imports and 16 imports, recursion limit
  600000; the default integer-string digit limit); no address-space cap; numpy importable; ``exit`` and
  ``quit`` set to None, and the ``os``/``shutil``/``subprocess`` functions and modules verl's
  ``reliability_guard`` removes (``subprocess`` and ``ctypes`` unimportable);
* stdin problems: the text made into a function ``code()`` line by line (a trailing
  ``if __name__ == '__main__':`` unwrapped first by ``ast``; lines starting ``from ``/``import `` before
  the first other line stay at module level, later ones are indented with the rest by a tab;
  ``stdin = sys.stdin`` and ``stdout = sys.stdout`` bound at module level), called with stdin as
  LiveCodeBench's evaluator gives it (``_suite._call_with_stdin``), stdout captured, ``SystemExit``
  ending it normally; the output compared on the host (:mod:`crlab.rewards.prime`);
* functional problems: the prelude and the program as a module, the function (or a ``Solution()``'s
  method, with ``class Solution`` in the text) called once; its value must survive ``json.dumps`` (else an
  error, as there); a first argument that is a dict gets int keys;
* SIGALRM after the time limit with no handler: the process dies, a failed test, as there.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import signal
import sys
import time

with contextlib.suppress(ImportError):  # on the host; in the sandbox the harness and _suite precede this
    from ._harness import CaseStatus, TestKind, _brief, _json_dumps, _json_loads, _NotPlain
    from ._suite import (
        _BLOCKED_MODULES,
        _GUARDED_OS,
        _LCB_STAR,
        EntryTag,
        _stdin_test,
        tag,
        unwrap_main,
    )

AUTHORS_PRELUDE = (
    "".join(f"from {m} import *\n" for m in _LCB_STAR)
    + "".join(f"import {m}\n" for m in _LCB_STAR[:-2])
    + "sys.setrecursionlimit(6*10**5)\n"
)
_IMPORT = ("from ", "import ")


def as_code_function(code: str) -> str:
    """The stdin program as verl's ``run_test`` rewrites it: the body of ``code()`` (see the docstring)."""
    code = unwrap_main(code)
    lines = [x + "\n" if x.startswith(_IMPORT) else "\t" + x + "\n" for x in code.split("\n")]
    out, started = "", False
    for line in lines:
        if line.startswith("\t") and not started:
            out += "stdin = sys.stdin\nstdout = sys.stdout\ndef code():\n" + line
            started = True
        elif started and line.startswith(_IMPORT):
            out += "\t" + line
        else:
            out += line
    return out


def _verl_guard() -> None:
    """What verl's ``reliability_guard`` changes that a program can notice."""
    import os
    import shutil
    import subprocess

    builtins.exit = builtins.quit = builtins.help = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in _GUARDED_OS:
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in (*_BLOCKED_MODULES, "subprocess", "ctypes"):
        sys.modules[name] = None


def _verl_compile(job: dict, limit: float):
    from types import ModuleType

    stdin = job["kind"] == TestKind.STDIN
    code = AUTHORS_PRELUDE + (as_code_function(job["program"]) if stdin else job["program"])
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        module = ModuleType("tmp_sol")
        exec(compile(code, "<string>", "exec"), module.__dict__)
        target = module.Solution() if not stdin and "class Solution" in job["program"] else module
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return getattr(target, "code" if stdin else job["fn_name"])


def _verl_stdin(method, text: str, limit: float) -> list:
    return _stdin_test(
        method, text, limit, lambda e: [EntryTag.ERROR, _brief(e)]
    )  # no timeout verdict: SIGALRM kills


def _verl_functional(method, args_text: str, limit: float) -> list:
    args = _json_loads(args_text)
    with contextlib.suppress(Exception):
        if isinstance(args[0], dict):
            args = [{int(k): v for k, v in args[0].items()}]
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        value = method(*args)
        json.dumps(value)  # (verl serializes the value for its report first: one it cannot is an error)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except Exception as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return [EntryTag.ERROR, _brief(e)]
    try:
        return [EntryTag.RETURNED, tag(value)]
    except (_NotPlain, RecursionError) as e:
        return [EntryTag.UNSENDABLE, _brief(e)]


def run_authors(job: dict) -> tuple[str, str | None, str]:
    """The job's tests in this process as the authors' reward runs them. -> ("ok", JSON entries, "") as
    ``_suite.run_lcb``; the list stops after an error."""
    limit = float(job["time_limit"])
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # no handler there: the alarm ends the process
    _verl_guard()
    sys.stdout = io.TextIOWrapper(io.BytesIO(), "utf-8")  # their test process prints to /dev/null
    try:
        method = _verl_compile(job, limit)
    except Exception as e:
        return CaseStatus.OK, _json_dumps([[EntryTag.ERROR, _brief(e), 0.0]]), ""
    run, entries = (_verl_stdin if job["kind"] == TestKind.STDIN else _verl_functional), []
    for text in job["inputs"]:
        start = time.monotonic()
        entries.append(run(method, text, limit) + [round(time.monotonic() - start, 6)])
        if entries[-1][0] == EntryTag.ERROR:  # (its run_test returns at a failure)
            break
    return CaseStatus.OK, _json_dumps(entries), ""

"""How the authors' training reward judges a program, on the host: the comparison half of the sandbox's
``authors`` harness (``reward.harness: authors``; the running half is ``_prime.py``).

verl's ``prime_code.compute_score(..., continuous=True)`` (the authors' vendored copy): every test in one
process (5 s each, 6 s for the process: ``utils.check_correctness`` joins it at limit + 1); if all pass, the
reward is 1; otherwise each of the first 10 tests in a process of its own (20 s; 10 s in the verl wheel)
and the reward is the share that passes. Those per-test cases are built without ``fn_name``, so in that
second pass a functional problem's program runs as a stdin program (its input the arguments, one JSON
value per line; its expected output the JSON text): a function that prints nothing fails there.

verl's ``prime_code/testing_util.py`` ``run_test`` (the copy the authors vendored = the ``verl`` wheel
0.9.1's), a lenient cascade; a test passes at the first rule that holds:

* stdin, with ``out`` the captured stdout's ``splitlines()`` and ``exp`` the expected text:
  1. ``"\\n".join(out)`` stripped equals ``exp`` stripped, or the same with each line of ``out`` stripped;
  2. ``out == [exp]``; then ``exp`` becomes its ``"\\n"``-split non-empty lines, each stripped, and
     ``out == exp``; then ``out`` loses its empty lines and ``out == exp`` again;
  3. the lines pair up one to one, not every pair is two digit strings, and each line parses as one float:
     ``np.allclose`` (relative 1e-5, absolute 1e-8) of the two lists;
  (its further set-of-tokens comparison compares lines with sets and can never hold);
* functional: the JSON-decoded expected value (a dict, or a list starting with a dict, gets int keys and
  is wrapped in a list), the return value (a top-level tuple made a list) ``==`` it, or ``==`` its first
  element, or (a list of tuples) its tuples as lists ``==`` its first element.
"""

from __future__ import annotations

import json
from contextlib import suppress

from . import lcb
from ._harness import Harness, TestKind
from .lcb import untag
from .spec import TestSpec


def _digits(value) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())


def output_matches(got: str, expected: str) -> bool:
    """True when stdout ``got`` passes against ``expected`` by the authors' rules (see above)."""
    out = got.splitlines()
    if "\n".join(out).strip() == expected.strip():
        return True
    if "\n".join(o.strip() for o in out).strip() == expected.strip():
        return True
    if out == [expected]:
        return True
    exp = [line.strip() for line in expected.split("\n") if line]
    if out == exp:
        return True
    out = [line for line in out if line]
    if out == exp:
        return True
    with suppress(Exception):
        if len(out) == len(exp) and not all(_digits(a) and _digits(b) for a, b in zip(out, exp, strict=True)):
            import numpy as np  # (imported here: the sandbox loads where numpy is missing)

            got_f, exp_f = [float(e) for e in out], [float(e) for e in exp]
            return len(got_f) == len(exp_f) and bool(np.allclose(got_f, exp_f))
    return False


def _int_keys(expected):
    with suppress(Exception):
        if isinstance(expected, dict):
            expected = [{int(k): v for k, v in expected.items()}]
    with suppress(Exception):
        if isinstance(expected[0], dict):
            expected = [{int(k): v for k, v in expected[0].items()}]
    return expected


def value_matches(entry_json: str, expected: str) -> bool:
    """A functional test's ``["r", tagged value]`` entry against the JSON text of the expected output."""
    try:
        value = untag(json.loads(entry_json)[1])
        exp = _int_keys(json.loads(expected))
        if type(value) is tuple:
            value = list(value)
        same = value == exp
        if isinstance(exp, list) and exp:
            same = same or value == exp[0]
        with suppress(Exception):
            if isinstance(value[0], tuple):
                same = same or [list(x) for x in value] == exp[0]
        return same is True
    except Exception:
        return False


def entry_passes(kind: TestKind, entry_json: str, expected: str) -> bool:
    """Does a test's entry (``["o", stdout]`` or ``["r", value]``) pass against ``expected``, by prime_code's
    comparisons?"""
    return lcb.entry_passes(kind, entry_json, expected, output_matches, value_matches)


def second_pass(program: str, spec: TestSpec, n: int, limit: float) -> tuple[dict, TestSpec]:
    """The request of the second pass (each of the first ``n`` tests alone, as a stdin program) and the
    spec its outputs are compared with."""
    inputs = list(spec.inputs[:n])
    if spec.kind == TestKind.FUNCTIONAL:
        inputs = ["\n".join(json.dumps(a) for a in json.loads(text)) for text in inputs]
    stdin = TestSpec(TestKind.STDIN, inputs, spec.outputs[:n], problem_id=spec.problem_id)
    request = {
        "kind": TestKind.STDIN, "program": program, "inputs": inputs, "fn_name": None, "check_code": None,
        "entry_point": None, "harness": Harness.AUTHORS, "per_test": True, "time_limit": limit,
    }  # fmt: skip
    return request, stdin

"""The test-spec format: what a program is run against.

Three kinds of test:

* ``stdin``: ``inputs[i]`` is the raw stdin text of test i, ``outputs[i]`` the expected stdout
  (compared as LiveCodeBench does, see :func:`outputs_match` below).
* ``functional``: ``inputs[i]`` is the JSON text of the argument list, ``outputs[i]`` the JSON text of the
  expected return value; ``fn_name`` names a top-level function or a method of ``class Solution``.
* ``assert``: ``check_code`` defines ``check(candidate)`` (HumanEval style) and ``entry_point`` names the
  candidate function; there are no inputs/outputs and the spec counts as one test.

Specs are validated when built; a malformed one raises :class:`TestSpecError` naming the problem and the
field, so a bad dataset row fails loudly at load time rather than inside the sandbox pool.

How outputs are judged (on the host, outside every sandboxed process). stdin tests, as LiveCodeBench grades them: trailing whitespace of each line is ignored, and so are empty
lines at the start and the end; the outputs must then have the same number of lines, and each line must
either be equal or split into the same number of whitespace-separated tokens that are pairwise equal.
Two integer tokens are equal when their values are (``007`` == ``7``, any length); other numeric tokens
(``1.5``, ``2e-3``) are equal within ``REL_TOL``/``ABS_TOL``; any other token must match exactly.
Functional tests: JSON values; numbers within the same tolerance (an int and a float may match, a bool
matches only a bool), lists and tuples alike, dicts by key.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from crlab.errors import CrlabError

from ._harness import TestKind

KINDS = tuple(TestKind)  # the kinds, in the order of the docstring above
_ALLOWED = tuple(k.value for k in TestKind)  # as error messages show them
_FIELDS = ("kind", "inputs", "outputs", "fn_name", "check_code", "entry_point", "problem_id")


class TestSpecError(CrlabError, ValueError):
    """A malformed test spec. ``problem_id`` and ``field`` say where; the message says how to fix it."""

    __test__ = False  # not a pytest test class

    def __init__(self, problem_id: str, field: str, problem: str):
        self.problem_id, self.field = problem_id, field
        super().__init__(f"test spec of problem {problem_id!r}, field {field!r}: {problem}")


def _check_json(pid: str, field: str, items: tuple[str, ...], need_list: bool) -> None:
    for i, text in enumerate(items):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise TestSpecError(pid, f"{field}[{i}]", f"not valid JSON ({e})") from None
        if need_list and not isinstance(value, list):
            raise TestSpecError(
                pid, f"{field}[{i}]", "must be the JSON text of the argument list, e.g. '[1, 2]'"
            )


def _check_identifier(pid: str, field: str, value) -> None:
    if not isinstance(value, str) or not value.isidentifier():
        raise TestSpecError(pid, field, f"must be a Python identifier, got {value!r}")


@dataclass(frozen=True)
class TestSpec:
    """The tests of one problem. Lists are accepted and stored as tuples."""

    __test__ = False  # not a pytest test class

    kind: TestKind  # a plain string is accepted and stored as its TestKind
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn_name: str | None = None
    check_code: str | None = None
    entry_point: str | None = None
    problem_id: str = "?"

    def __post_init__(self) -> None:
        pid = str(self.problem_id)
        object.__setattr__(self, "problem_id", pid)
        if self.kind not in KINDS:
            raise TestSpecError(pid, "kind", f"unknown test kind {self.kind!r}; expected one of {_ALLOWED}")
        object.__setattr__(self, "kind", TestKind(self.kind))
        for field in ("inputs", "outputs"):
            value = getattr(self, field)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise TestSpecError(pid, field, f"must be a list of strings, got {type(value).__name__}")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise TestSpecError(pid, f"{field}[{i}]", f"must be a string, got {type(item).__name__}")
            object.__setattr__(self, field, tuple(value))
        getattr(self, f"_validate_{self.kind}")(pid)

    def _validate_io(self, pid: str) -> None:
        if not self.inputs:
            raise TestSpecError(pid, "inputs", "no test cases; give at least one input")
        if len(self.inputs) != len(self.outputs):
            raise TestSpecError(
                pid,
                "outputs",
                f"{len(self.outputs)} outputs for {len(self.inputs)} inputs; they must pair up",
            )

    def _validate_stdin(self, pid: str) -> None:
        self._validate_io(pid)

    def _validate_functional(self, pid: str) -> None:
        self._validate_io(pid)
        _check_identifier(pid, "fn_name", self.fn_name)
        _check_json(pid, "inputs", self.inputs, need_list=True)
        _check_json(pid, "outputs", self.outputs, need_list=False)

    def _validate_assert(self, pid: str) -> None:
        if self.inputs or self.outputs:
            raise TestSpecError(
                pid, "inputs", "assert-kind specs carry their tests in check_code; leave it empty"
            )
        if not isinstance(self.check_code, str) or "check" not in self.check_code:
            raise TestSpecError(pid, "check_code", "must be code that defines check(candidate)")
        try:
            compile(self.check_code, f"<check of {pid}>", "exec")
        except (SyntaxError, ValueError) as e:
            raise TestSpecError(pid, "check_code", f"does not compile ({e})") from None
        _check_identifier(pid, "entry_point", self.entry_point)

    @classmethod
    def from_dict(cls, d: dict, problem_id: str = "?") -> TestSpec:
        """Build from a plain dict (as written by :meth:`to_dict`); unknown keys are an error (typos)."""
        if not isinstance(d, dict):
            raise TestSpecError(str(problem_id), "<spec>", f"must be a dict, got {type(d).__name__}")
        pid = str(d.get("problem_id", problem_id) if problem_id == "?" else problem_id)
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise TestSpecError(pid, unknown[0], f"unknown field; known fields are {_FIELDS}")
        kind = d.get("kind")
        if kind not in KINDS:
            what = "missing" if "kind" not in d else f"unknown test kind {kind!r}"
            raise TestSpecError(pid, "kind", f"{what}; expected one of {_ALLOWED}")
        required = {
            TestKind.STDIN: ("inputs", "outputs"),
            TestKind.FUNCTIONAL: ("inputs", "outputs", "fn_name"),
        }
        for field in required.get(kind, ("check_code", "entry_point")):
            if d.get(field) is None:
                raise TestSpecError(pid, field, f"missing; required for kind {kind!r}")
        return cls(
            kind=d["kind"],
            inputs=d.get("inputs", ()),
            outputs=d.get("outputs", ()),
            fn_name=d.get("fn_name"),
            check_code=d.get("check_code"),
            entry_point=d.get("entry_point"),
            problem_id=pid,
        )

    def to_dict(self) -> dict:
        d: dict = {"kind": self.kind.value, "inputs": list(self.inputs), "outputs": list(self.outputs)}
        for field in ("fn_name", "check_code", "entry_point"):
            if getattr(self, field) is not None:
                d[field] = getattr(self, field)
        d["problem_id"] = self.problem_id
        return d

    def __len__(self) -> int:
        return 1 if self.kind == TestKind.ASSERT else len(self.inputs)

    def output_matches(self, i: int, got: str) -> bool:
        """Is ``got`` (captured stdout, or the JSON text of the return value) right for test ``i``?"""
        if self.kind == TestKind.STDIN:
            return outputs_match(got, self.outputs[i])
        try:
            return values_match(json.loads(got), json.loads(self.outputs[i]))
        except (ValueError, RecursionError, TypeError):  # not JSON, too deep, too long an int
            return False


# ---------------------------------------------------------------- judging outputs
REL_TOL = 1e-6
ABS_TOL = 1e-6
_INT = re.compile(r"[+-]?\d+\Z")
_NUM = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return lines[start:end]


def _int_key(token: str) -> tuple[bool, str]:
    digits = token.lstrip("+-").lstrip("0") or "0"
    return (token.startswith("-") and digits != "0", digits)


def tokens_match(a: str, b: str) -> bool:
    """One token against another: exact, equal integers, or numbers within tolerance."""
    if a == b:
        return True
    if _INT.match(a) and _INT.match(b):
        return _int_key(a) == _int_key(b)
    if not (_NUM.match(a) and _NUM.match(b)):
        return False
    x, y = float(a), float(b)
    if not (math.isfinite(x) and math.isfinite(y)):
        return False
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _line_match(got: str, expected: str) -> bool:
    if got == expected:
        return True
    g, e = got.split(), expected.split()
    return len(g) == len(e) and all(tokens_match(x, y) for x, y in zip(g, e, strict=True))


def outputs_match(got: str, expected: str) -> bool:
    """True when the captured stdout ``got`` is an accepted answer for ``expected``."""
    g, e = _lines(got), _lines(expected)
    if g == e:
        return True
    return len(g) == len(e) and all(_line_match(x, y) for x, y in zip(g, e, strict=True))


def values_match(got, expected) -> bool:
    """Compare two JSON values (as returned by ``json.loads``)."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        if isinstance(got, int) and isinstance(expected, int):
            return got == expected
        try:
            if math.isnan(got) or math.isnan(expected):
                return math.isnan(got) and math.isnan(expected)
            return math.isclose(got, expected, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        except OverflowError:  # an int too large for a float
            return False
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(
            values_match(x, y) for x, y in zip(got, expected, strict=True)
        )
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(values_match(got[k], expected[k]) for k in got)
    return type(got) is type(expected) and got == expected

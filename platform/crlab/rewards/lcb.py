"""How LiveCodeBench judges a test, on the host: the comparison half of the sandbox's ``lcb`` harness.

LiveCodeBench's ``evaluation/testing_util.py`` (``nvidia-livecodebench`` 26.3, the code of its v5/v6
releases; the running half is ``_suite.py``):

* stdin: both texts are stripped, split on ``"\\n"`` only and each line stripped; the line counts must be
  equal, and each line identical, or split on whitespace into tokens that all parse as ``Decimal`` and
  are equal as Decimals (``1.0`` = ``1``, ``1e3`` = ``1000``; no tolerance: ``0.3333`` != ``0.33333``);
* functional: the return value, a top-level tuple made a list, ``==`` the JSON-decoded expected output
  (Python's equality: ``True == 1``, ``1.0 == 1``, a nested tuple is not a list).

The first test that fails ends the program's run there: later tests are ``not_run``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from ._harness import TestKind
from ._suite import EntryTag, ValueTag

_COLLECTIONS = {ValueTag.LIST: list, ValueTag.TUPLE: tuple, ValueTag.SET: set, ValueTag.FROZENSET: frozenset}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except Exception:
        return None


def output_matches(got: str, expected: str) -> bool:
    """True when stdout ``got`` is accepted for ``expected`` by LiveCodeBench's rules (see above)."""
    g, e = _lines(got), _lines(expected)
    if len(g) != len(e):
        return False
    for a, b in zip(g, e, strict=True):
        if a == b:
            continue
        x, y = _decimals(a), _decimals(b)
        try:
            if x is None or y is None or x != y:
                return False
        except Exception:  # a signalling NaN refuses to be compared: LiveCodeBench fails the test
            return False
    return True


def untag(data):
    """The value the sandbox sent (``_suite.tag``) rebuilt from exact builtin types."""
    kind = data[0]
    if kind == ValueTag.NONE:
        return None
    if kind in (ValueTag.BOOL, ValueTag.STR):
        return data[1]
    if kind == ValueTag.INT:
        return int(data[1], 16)
    if kind == ValueTag.FLOAT:
        return float.fromhex(data[1])
    if kind == ValueTag.COMPLEX:
        return complex(float.fromhex(data[1]), float.fromhex(data[2]))
    if kind == ValueTag.DICT:
        return {untag(k): untag(v) for k, v in data[1]}
    items = [untag(x) for x in data[1]]
    return _COLLECTIONS[kind](items)


def value_matches(entry_json: str, expected: str) -> bool:
    """A functional test's ``["r", tagged value]`` entry against the JSON text of the expected output."""
    try:
        value = untag(json.loads(entry_json)[1])
        if type(value) is tuple:
            value = list(value)
        return bool(value == json.loads(expected))
    except Exception:  # too deep, malformed: not an answer LiveCodeBench would accept either
        return False


def entry_passes(
    kind: TestKind, entry_json: str, expected: str, outputs: Any = output_matches, values: Any = value_matches
) -> bool:
    """Does a test's entry (``["o", stdout]`` or ``["r", value]``) pass against ``expected``? ``outputs`` and
    ``values`` compare printed output and returned values (LiveCodeBench's rules by default)."""
    if kind == TestKind.STDIN:
        try:
            entry = json.loads(entry_json)
        except ValueError:
            return False
        return entry[0] == EntryTag.OUTPUT and outputs(entry[1], expected)
    return values(entry_json, expected)

"""Programs that try to fake a pass from inside the process: exit tricks, always-equal objects, patched
builtins, fake markers and protocol frames. Each must get a non-pass verdict, with the same containment
checks as ``test_hostile.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from crlab.rewards import Verdict

W, RE, TO, ME = (Verdict.WRONG_ANSWER, Verdict.RUNTIME_ERROR, Verdict.TIMEOUT, Verdict.MEMORY_EXCEEDED)


class Case(NamedTuple):
    name: str
    program: str  # string.Template: $sentinel $sentinel_dir $repo $home $port $marker $secrets
    spec: str = "pwned"  # a key of conftest.HOSTILE_SPECS
    allowed: frozenset = frozenset({W, RE, TO, ME})  # any non-pass verdict unless narrowed
    repeat: int = 1


ALWAYS_EQUAL = (
    "class AlwaysEqual:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
    "    def __hash__(self): return 0\n"
)
CASES = [
    # print verdict-like markers instead of the answer
    Case(
        "fake-markers",
        "print('passed')\nprint('{\"v\": \"passed\", \"results\": []}')\nprint('All tests passed')",
        spec="add-stdin",
    ),
    # write fake protocol frames to every fd it can find
    Case(
        "fake-frames",
        "import os, json, struct\nfake = json.dumps({'id': 'x', 'results': [{'v': 'passed', 't': 0}]}).encode()\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, struct.pack('>I', len(fake)) + fake)\n    except OSError:\n        pass\nprint('safe')",
    ),
    # functional: sys.exit(0) at import time
    Case(
        "functional-sys-exit",
        "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b",
        spec="add-func",
        allowed=frozenset({RE}),
    ),
    # functional: os._exit(0) inside the call
    Case(
        "functional-os-exit",
        "import os\ndef add(a, b):\n    os._exit(0)",
        spec="add-func",
        allowed=frozenset({RE}),
    ),
    # functional: an always-equal return object
    Case(
        "functional-always-equal",
        ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()",
        spec="add-func",
        allowed=frozenset({W}),
    ),
    # functional: an int subclass that equals everything
    Case(
        "functional-int-subclass",
        "class E(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return E(0)",
        spec="add-func",
        allowed=frozenset({W}),
    ),
    # functional: a metaclass that makes its class compare equal to int
    Case(
        "functional-metaclass",
        "class M(type):\n    def __eq__(cls, o): return True\n    def __hash__(cls): return hash(int)\nclass E(metaclass=M):\n    pass\ndef add(a, b):\n    return E()",
        spec="add-func",
        allowed=frozenset({W}),
    ),
    # functional: monkey-patch builtins and json so a wrong value looks right
    Case(
        "functional-monkeypatch",
        "import builtins, json\nbuiltins.type = lambda *a: int\nbuiltins.isinstance = lambda *a: True\njson.dumps = lambda *a, **k: '3'\nclass E(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return E(a - b)",
        spec="add-func",
        allowed=frozenset({W}),
    ),
    # assert: exit(0) before check runs
    Case(
        "assert-sys-exit",
        "import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)",
        spec="add-assert",
        allowed=frozenset({RE}),
    ),
    # assert: os._exit(0) before check runs
    Case("assert-os-exit", "import os\nos._exit(0)", spec="add-assert", allowed=frozenset({RE})),
    # assert: the candidate exits the process when called
    Case(
        "assert-exit-in-candidate",
        "import os\ndef add(a, b):\n    os._exit(0)",
        spec="add-assert",
        allowed=frozenset({RE}),
    ),
    # assert: the candidate raises SystemExit(0) when called
    Case(
        "assert-systemexit-in-candidate",
        "def add(a, b):\n    raise SystemExit(0)",
        spec="add-assert",
        allowed=frozenset({RE}),
    ),
    # assert: an always-equal return object
    Case(
        "assert-always-equal",
        ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()",
        spec="add-assert",
        allowed=frozenset({W}),
    ),
    # assert: a list subclass that equals everything
    Case(
        "assert-list-subclass",
        "class L(list):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return L()",
        spec="add-assert",
        allowed=frozenset({W}),
    ),
    # assert: patch exec/compile/dict so that check() becomes a no-op
    Case(
        "assert-patch-exec",
        "import builtins\ndef fake_exec(code, g=None, *a):\n    if g is not None:\n        g['check'] = lambda c: None\nbuiltins.exec = fake_exec\nbuiltins.compile = lambda *a, **k: None\nbuiltins.dict = lambda *a, **k: {'check': lambda c: None}\ndef add(a, b):\n    return 0",
        spec="add-assert",
        allowed=frozenset({W, RE}),
    ),
    # assert: patch builtins used by check (abs) and the AssertionError name
    Case(
        "assert-monkeypatch-builtins",
        "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.AssertionError = KeyError\nbuiltins.type = lambda *a: int\ndef add(a, b):\n    return 3",
        spec="add-assert",
        allowed=frozenset({W, RE}),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_forgery_does_not_pass(contained, case):
    contained(case.program, case.spec, case.allowed, case.repeat)

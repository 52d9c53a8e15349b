"""A program's tests run one after another in one test process: each still gets the verdict (and output)
that a fresh process would give it, and the process is replaced whenever a test left something behind.

``_raw`` talks to a worker directly to see each test's raw output and ``k``, the rank of the test process
that ran it within the program (0 for the first process, 1 after one replacement, ...).
"""

from __future__ import annotations

import random

import pytest

from crlab.rewards import TestSpec, Verdict
from crlab.rewards import sandbox as sandbox_module

P, W, RE, TO, ME = (
    Verdict.PASSED,
    Verdict.WRONG_ANSWER,
    Verdict.RUNTIME_ERROR,
    Verdict.TIMEOUT,
    Verdict.MEMORY_EXCEEDED,
)
FOUR = TestSpec(kind="stdin", inputs=("1\n", "2\n", "3\n", "4\n"), outputs=("1\n", "2\n", "3\n", "4\n"))
FOUR_F = TestSpec(
    kind="functional", inputs=("[1]", "[2]", "[3]", "[4]"), outputs=("1", "2", "3", "4"), fn_name="f"
)


def _raw(sb, program: str, spec: TestSpec) -> list[dict]:
    """Run ``program`` on a worker of ``sb`` and return the server's raw per-test results."""
    worker = sb._idle.get()
    try:
        req = {"id": "reuse-test", **sandbox_module.job_request(program, spec)}
        raw = worker.call(req, len(spec), 60.0, sandbox_module._VERDICTS)
    finally:
        sb._idle.put(worker)
    assert raw is not None, "the worker died"
    return raw


def _outputs(raw: list[dict]) -> list[str | None]:
    return [r.get("out", r.get("val")) if r["v"] is None else r["v"] for r in raw]


def _fresh(sb, program: str, spec: TestSpec) -> list[str | None]:
    """Each test alone: what a fresh process gives for it."""
    out = []
    for inp, exp in zip(spec.inputs, spec.outputs, strict=True):
        one = TestSpec(kind=spec.kind, inputs=(inp,), outputs=(exp,), fn_name=spec.fn_name)
        out += _outputs(_raw(sb, program, one))
    return out


def test_clean_tests_share_one_process(sandbox):
    for program, spec in [("print(input())", FOUR), ("def f(x):\n    return x", FOUR_F)]:
        raw = _raw(sandbox, program, spec)
        assert [r["k"] for r in raw] == [0, 0, 0, 0]
        assert sandbox.run(program, spec).pass_rate == 1.0


@pytest.mark.parametrize(
    ("program", "expected", "ranks"),
    [
        # times out on test 2: tests 3 and 4 run in a new process, with their own verdicts
        ("n = int(input())\nwhile n == 2:\n    pass\nprint(n)", [P, TO, P, P], [0, 0, 1, 1]),
        # the process dies on test 2 (os._exit, then a segfault)
        ("import os\nn = int(input())\nif n == 2:\n    os._exit(0)\nprint(n)", [P, W, P, P], [0, 0, 1, 1]),
        ("import os\nn = int(input())\nif n == 2:\n    os.kill(os.getpid(), 11)\nprint(n)",
         [P, RE, P, P], [0, 0, 1, 1]),
        # a Python exception is not a crash: the process goes on
        ("n = int(input())\nif n == 2:\n    raise ValueError(n)\nprint(n)", [P, RE, P, P], [0, 0, 0, 0]),
        # memory exhausted on test 2: a new process for the rest
        ("n = int(input())\nx = bytearray(1 << 40) if n == 2 else 0\nprint(n)", [P, ME, P, P], [0, 0, 1, 1]),
        # wrong on test 3 only
        ("n = int(input())\nprint(n + (n == 3))", [P, P, W, P], [0, 0, 0, 0]),
    ],
    ids=["timeout", "os-exit", "segfault", "exception", "memory", "wrong"],
)
def test_each_test_keeps_its_own_verdict(sandbox, program, expected, ranks):
    assert [r.verdict for r in sandbox.run(program, FOUR).results] == expected
    assert [r["k"] for r in _raw(sandbox, program, FOUR)] == ranks


# Each program prints some process-wide state as it finds it, then changes that state (on its first test
# only, or on every test). A fresh process per test would print the same on every test.
CARRY = {
    "recursion-limit": "import sys\nprint(sys.getrecursionlimit())\nsys.setrecursionlimit(123456)",
    "int-digits": "import sys\nprint(sys.get_int_max_str_digits())\nsys.set_int_max_str_digits(0)",
    "gc-disabled": "import gc\nprint(gc.isenabled(), gc.get_threshold())\ngc.disable()\ngc.set_threshold(5)",
    "decimal": "from decimal import getcontext\nprint(getcontext().prec)\ngetcontext().prec = 77",
    "alarm": "import signal\nprint(signal.alarm(0))\nsignal.alarm(100)",
    "stdout-replaced": "import io, sys\nprint(type(sys.stdout).__name__)\nsys.stdout = io.StringIO()",
    "stdin-closed": "print(open(0).read().strip())",
    "fd-0-closed": "import os\nprint(input())\nos.close(0)",
    "builtin-patched": "import builtins\nprint(hasattr(builtins, 'memo'), len('ab'))\nbuiltins.memo = 1\nbuiltins.len = lambda s: 0",
    "module-attribute": "import math\nprint(hasattr(math, 'memo'))\nmath.memo = {}",
    "module-imported": "import sys\nprint('random' in sys.modules)\nimport random",
    "environ": "import os\nprint(os.environ.get('MEMO'))\nos.environ['MEMO'] = '1'",
    "cwd": "import os\nprint(os.getcwd() == os.environ['HOME'])\nos.chdir('/')",
    "umask": "import os\nprint(oct(os.umask(0o077)))",
    "rlimit": "import resource\nprint(resource.getrlimit(resource.RLIMIT_NOFILE))\nresource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))",
    "nice": "import os\nprint(os.nice(0))\nos.nice(3)",
    "signal-handler": "import signal\nprint(signal.getsignal(signal.SIGINT))\nsignal.signal(signal.SIGINT, signal.SIG_IGN)",
    "file-in-cwd": "import os\nprint(os.listdir('.'))\nopen('memo', 'w').write('1')",
    "file-in-tmp": "import os\nprint(os.listdir('/tmp'))\nopen('/tmp/memo', 'w').write('1')",
    "fd-left-open": "import os\nprint(len(os.listdir('/proc/self/fd')))\nmemo = os.open('/dev/null', os.O_RDONLY)",
    "thread-left": "import _thread, time\nprint(_thread._count())\n_thread.start_new_thread(time.sleep, (5,))",
    "hidden-in-a-container": "import sys\nprint('memo' in sys.path_importer_cache)\nsys.path_importer_cache['memo'] = bytearray(32 << 20)",
    "finalizer-writes": "import os\nclass A:\n    def __del__(self):\n        os.write(1, b'late ')\na = A()\na.me = a\nprint(input())",
    "late-daemon": "import os, time\nprint(os.listdir('/tmp'))\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.2)\n    open('/tmp/late', 'w').write('x')\n    os._exit(0)\ntime.sleep(0.3)",
}


@pytest.mark.parametrize("name", list(CARRY))
def test_a_test_finds_the_process_as_a_fresh_one(sandbox, name):
    spec = TestSpec(kind="stdin", inputs=("1\n", "2\n", "3\n"), outputs=("", "", ""))
    fresh = _fresh(sandbox, CARRY[name], spec)
    assert len(set(fresh)) == 1 or name in ("finalizer-writes", "stdin-closed", "fd-0-closed"), fresh
    assert _outputs(_raw(sandbox, CARRY[name], spec)) == fresh


RLIMIT_CARRY = ["recursion-limit", "module-attribute", "environ", "file-in-cwd", "thread-left"]


@pytest.mark.parametrize("name", RLIMIT_CARRY)
def test_a_test_finds_the_process_as_a_fresh_one_rlimit(rlimit_sandbox, name):
    spec = TestSpec(kind="stdin", inputs=("1\n", "2\n"), outputs=("", ""))
    assert _outputs(_raw(rlimit_sandbox, CARRY[name], spec)) == _fresh(rlimit_sandbox, CARRY[name], spec)


FUNCTIONAL_STATE = [
    # a mutable default argument: the function is defined again for every test
    "def f(x, acc=[]):\n    acc.append(x)\n    return len(acc)",
    # a class attribute and a module-level cache
    "class Solution:\n    seen = []\n    def f(self, x):\n        self.seen.append(x)\n        return len(self.seen)",
    "from functools import lru_cache\ncalls = []\n@lru_cache(None)\ndef g(x):\n    calls.append(x)\n    return x\ndef f(x):\n    g(x); g(x + 1)\n    return len(calls)",
]


@pytest.mark.parametrize("program", FUNCTIONAL_STATE, ids=["default-arg", "class-attr", "lru-cache"])
def test_functional_tests_start_from_fresh_definitions(sandbox, program):
    raw = _raw(sandbox, program, FOUR_F)
    assert _outputs(raw) == _fresh(sandbox, program, FOUR_F)
    assert [r["k"] for r in raw] == [0, 0, 0, 0]


def test_random_is_as_in_fresh_processes(sandbox):
    seeds = [3, 5, 7]
    spec = TestSpec(
        kind="stdin",
        inputs=tuple(f"{s}\n" for s in seeds),
        outputs=tuple(f"{random.Random(s).random()}\n" for s in seeds),
    )
    program = "import random\nrandom.seed(int(input()))\nprint(random.random())"
    assert sandbox.run(program, spec).pass_rate == 1.0


def test_forged_runner_messages_do_not_pass_a_wrong_answer(sandbox):
    # writes fake "done"/"settled" messages (and a huge stdout size) to every fd, then a wrong answer
    program = (
        "import os\nfor fd in range(3, 128):\n    for m in (b'D0' + (1 << 40).to_bytes(8, 'big'), b'R1'):\n"
        "        try:\n            os.write(fd, m)\n        except OSError:\n            pass\nprint(-1)"
    )
    assert P not in {r.verdict for r in sandbox.run(program, FOUR).results}
    assert sandbox.run("print(input())", FOUR).pass_rate == 1.0


def test_a_program_that_closes_every_fd_gets_the_verdicts_of_lone_tests(sandbox):
    # the result fd and the socket to the server go too: each test ends as it would alone
    program = "import os\nprint(input())\nos.closerange(3, 1024)"
    alone = [
        sandbox.run(program, TestSpec(kind="stdin", inputs=(i,), outputs=(o,))).results[0].verdict
        for i, o in zip(FOUR.inputs, FOUR.outputs, strict=True)
    ]
    assert [r.verdict for r in sandbox.run(program, FOUR).results] == alone


def test_a_program_that_closes_its_socket_to_the_server_still_gets_its_verdicts(sandbox):
    program = (
        "import os, stat\nfor fd in range(3, 128):\n    try:\n        if stat.S_ISSOCK(os.fstat(fd).st_mode):\n"
        "            os.close(fd)\n    except OSError:\n        pass\nn = int(input())\nprint(n + (n == 3))"
    )
    assert [r.verdict for r in sandbox.run(program, FOUR).results] == [P, P, W, P]

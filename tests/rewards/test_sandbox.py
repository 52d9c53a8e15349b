"""Verdicts of the Sandbox for every test kind, in both isolation modes, and the pool's behaviour."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest

from crlab.rewards import Sandbox, SandboxError, SandboxIsolationWarning, TestSpec, Verdict
from crlab.rewards import sandbox as sandbox_module

PLATFORM = Path(__file__).resolve().parents[2] / "platform"
P, W, RE, TO, ME = (
    Verdict.PASSED,
    Verdict.WRONG_ANSWER,
    Verdict.RUNTIME_ERROR,
    Verdict.TIMEOUT,
    Verdict.MEMORY_EXCEEDED,
)

STDIN = TestSpec(kind="stdin", inputs=("1 2\n", "10 20\n"), outputs=("3\n", "30\n"), problem_id="add")
FUNC = TestSpec(
    kind="functional", inputs=("[1, 2]", "[10, 20]"), outputs=("3", "30"), fn_name="add", problem_id="fadd"
)
LIST = TestSpec(
    kind="functional", inputs=("[[3, 1, 2]]",), outputs=("[1, 2, 3]",), fn_name="srt", problem_id="srt"
)
FLOAT = TestSpec(
    kind="functional", inputs=("[1, 3]",), outputs=("0.3333333333",), fn_name="div", problem_id="div"
)
ASSERT = TestSpec(
    kind="assert",
    inputs=(),
    outputs=(),
    check_code="def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(10, 20) == 30\n",
    entry_point="add",
    problem_id="aadd",
)

VERDICT_CASES = [
    # stdin: correct program
    ("stdin-pass", "a, b = map(int, input().split())\nprint(a + b)", STDIN, [P, P]),
    # stdin: correct for one test only
    ("stdin-partial", "a, b = map(int, input().split())\nprint(3)", STDIN, [P, W]),
    # stdin: reads everything with sys.stdin and prints with trailing spaces
    ("stdin-sysread", "import sys\nprint(sum(map(int, sys.stdin.read().split())), '  ')", STDIN, [P, P]),
    # stdin: exit(0) after printing is a normal end
    ("stdin-exit0", "a, b = map(int, input().split())\nprint(a + b)\nexit(0)", STDIN, [P, P]),
    # stdin: non-zero exit status
    ("stdin-exit3", "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(3)", STDIN, [RE, RE]),
    # stdin: exception
    ("stdin-raise", "raise ValueError('boom')", STDIN, [RE, RE]),
    # stdin: syntax error
    ("stdin-syntax", "print(", STDIN, [RE, RE]),
    # stdin: infinite loop
    ("stdin-loop", "while True:\n    pass", STDIN, [TO, TO]),
    # stdin: sleeps past the wall clock (no CPU used)
    ("stdin-sleep", "import time\ntime.sleep(30)", STDIN, [TO, TO]),
    # stdin: memory bomb
    ("stdin-memory", "x = bytearray(4 << 30)", STDIN, [ME, ME]),
    # stdin: too much output
    ("stdin-output", "while True:\n    print('x' * 1000)", STDIN, [RE, RE]),
    # stdin: unbounded recursion (RecursionError)
    ("stdin-recursion", "def f(n):\n    return f(n + 1)\nf(0)", STDIN, [RE, RE]),
    # stdin: killed by a signal (segfault)
    ("stdin-segv", "import os, signal\nprint(3)\nos.kill(os.getpid(), signal.SIGSEGV)", STDIN, [RE, RE]),
    # functional: top-level function
    ("func-pass", "def add(a, b):\n    return a + b", FUNC, [P, P]),
    # functional: LeetCode class, typing names predefined
    (
        "func-class",
        "class Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b",
        FUNC,
        [P, P],
    ),
    # functional: wrong value
    ("func-wrong", "def add(a, b):\n    return a - b", FUNC, [W, W]),
    # functional: tuple equals list
    ("func-tuple", "def srt(xs):\n    return tuple(sorted(xs))", LIST, [P]),
    # functional: float tolerance
    ("func-float", "def div(a, b):\n    return a / b", FLOAT, [P]),
    # functional: missing function
    ("func-missing", "def other(a, b):\n    return a + b", FUNC, [RE, RE]),
    # functional: exception
    ("func-raise", "def add(a, b):\n    return a / 0", FUNC, [RE, RE]),
    # functional: non-JSON return value (a set)
    ("func-set", "def add(a, b):\n    return {a + b}", FUNC, [W, W]),
    # functional: timeout
    ("func-loop", "def add(a, b):\n    while True:\n        pass", FUNC, [TO, TO]),
    # functional: memory
    ("func-memory", "def add(a, b):\n    return [0] * (1 << 40)", FUNC, [ME, ME]),
    # functional: printing is allowed and ignored
    ("func-print", "def add(a, b):\n    print('debug', a)\n    return a + b", FUNC, [P, P]),
    # assert: correct
    ("assert-pass", "def add(a, b):\n    return a + b", ASSERT, [P]),
    # assert: failing check
    ("assert-wrong", "def add(a, b):\n    return a * b", ASSERT, [W]),
    # assert: exception inside the candidate
    ("assert-raise", "def add(a, b):\n    raise KeyError(a)", ASSERT, [RE]),
    # assert: entry point missing
    ("assert-missing", "def plus(a, b):\n    return a + b", ASSERT, [RE]),
    # assert: timeout
    ("assert-loop", "def add(a, b):\n    while True:\n        pass", ASSERT, [TO]),
    # assert: memory
    ("assert-memory", "def add(a, b):\n    return ' ' * (1 << 40)", ASSERT, [ME]),
]


def _check_verdicts(sb, program, spec, expected):
    result = sb.run(program, spec)
    assert [r.verdict for r in result.results] == expected, result
    assert all(r.wall_s >= 0 for r in result.results)
    assert result.pass_rate == expected.count(P) / len(expected)


@pytest.mark.parametrize(
    ("name", "program", "spec", "expected"), VERDICT_CASES, ids=[c[0] for c in VERDICT_CASES]
)
def test_verdicts_bwrap(sandbox, name, program, spec, expected):
    _check_verdicts(sandbox, program, spec, expected)


RLIMIT_SUBSET = {
    "stdin-pass",
    "stdin-partial",
    "stdin-raise",
    "stdin-loop",
    "stdin-memory",
    "stdin-output",
    "func-pass",
    "func-class",
    "func-wrong",
    "func-set",
    "assert-pass",
    "assert-wrong",
}


@pytest.mark.parametrize(
    ("name", "program", "spec", "expected"),
    [c for c in VERDICT_CASES if c[0] in RLIMIT_SUBSET],
    ids=[c[0] for c in VERDICT_CASES if c[0] in RLIMIT_SUBSET],
)
def test_verdicts_rlimit(rlimit_sandbox, name, program, spec, expected):
    _check_verdicts(rlimit_sandbox, program, spec, expected)


@pytest.mark.serial  # a wall-time bound
def test_timeout_wall_time_is_near_the_limit(sandbox):
    (r,) = sandbox.run("while True:\n    pass", STDIN, max_tests=1).results
    assert r.verdict is TO and 0.9 <= r.wall_s < 2.0


def test_max_tests_takes_the_first_tests(sandbox):
    spec = TestSpec(
        kind="stdin", inputs=tuple(f"{i}\n" for i in range(20)), outputs=tuple(f"{i}\n" for i in range(20))
    )
    assert len(sandbox.run("print(input())", spec, max_tests=10).results) == 10
    assert len(sandbox.run("print(input())", spec).results) == 20
    assert sandbox.run("print(input())", spec, max_tests=0).results == ()


BAD_PROGRAMS = [
    # bytes that are not UTF-8
    b"print('\xff\xfe')",
    # a str with a lone surrogate cannot be UTF-8
    "print('\ud800')",
    # larger than the 1 MB cap
    "x = 1\n" * 200_000,
    # not text at all
    12345,
]


@pytest.mark.parametrize(
    "program", BAD_PROGRAMS, ids=["non-utf8-bytes", "lone-surrogate", "too-large", "not-text"]
)
def test_bad_program_text_is_a_runtime_error(sandbox, program):
    result = sandbox.run(program, STDIN)
    assert [r.verdict for r in result.results] == [RE, RE]
    assert result.results[0].detail


def test_utf8_bytes_program_runs(sandbox):
    assert (
        sandbox.run(
            "print('héllo'.upper())".encode(), TestSpec(kind="stdin", inputs=("",), outputs=("HÉLLO",))
        ).pass_rate
        == 1.0
    )


def test_non_utf8_stdout_is_compared_not_crashing(sandbox):
    program = "import sys\nsys.stdout.buffer.write(b'\\xff\\n')"
    assert sandbox.run(program, STDIN).results[0].verdict is W


@pytest.mark.serial  # a wall-time bound
def test_run_many_keeps_input_order_and_runs_concurrently(sandbox):
    jobs = [
        (
            f"import time\ntime.sleep(0.3)\nprint({i})",
            TestSpec(kind="stdin", inputs=("",), outputs=(f"{i}\n",)),
        )
        for i in range(8)
    ]
    start = time.monotonic()
    results = sandbox.run_many(jobs)
    elapsed = time.monotonic() - start
    assert [r.pass_rate for r in results] == [1.0] * 8
    assert elapsed < 8 * 0.3 * 0.75  # two workers: about half the serial time


def test_run_many_rejects_non_specs(sandbox):
    with pytest.raises(TypeError):
        sandbox.run_many([("print(1)", {"kind": "stdin"})])


@pytest.mark.serial  # kills the workers 0.3 s into 0.8 s programs
def test_workers_killed_mid_run_are_replaced_and_their_programs_run_again(sandbox):
    spec = TestSpec(kind="stdin", inputs=("",), outputs=("done\n",))
    slow = "import time\ntime.sleep(0.8)\nprint('done')"
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", sandbox.run_many([(slow, spec)] * 2)))
    thread.start()
    time.sleep(0.3)
    for worker in list(sandbox._pool):  # the host kills both fork servers (bwrap) mid-test
        worker.proc.kill()
    thread.join(30)
    assert [r.results[0].verdict for r in out["r"]] == [Verdict.PASSED, Verdict.PASSED]  # run again
    assert [r.pass_rate for r in sandbox.run_many([("print('done')", spec)] * 4)] == [1.0] * 4


def test_run_outside_context_manager_is_an_error():
    sb = Sandbox(isolation="bwrap") if sandbox_module.shutil.which("bwrap") else None
    if sb is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    with pytest.raises(SandboxError, match="context manager"):
        sb.run("print(1)", STDIN)


def test_missing_bwrap_refuses_to_start(monkeypatch):
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    with pytest.raises(SandboxError, match="bwrap.*apt-get install bubblewrap.*isolation 'rlimit' \\(reward.isolation=rlimit\\)"):
        Sandbox()


def test_rlimit_mode_warns_once(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_rlimit_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Sandbox(isolation="rlimit")
        Sandbox(isolation="rlimit")
    assert len([w for w in caught if issubclass(w.category, SandboxIsolationWarning)]) == 1
    assert "NO filesystem, network or process isolation" in str(caught[0].message)


@pytest.mark.parametrize(
    "kwargs",
    [{"isolation": "docker"}, {"workers": 0}, {"time_limit_s": 0}, {"memory_mb": 1}],
    ids=["unknown-isolation", "no-workers", "no-time", "no-memory"],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        Sandbox(**kwargs)


def test_bwrap_process_environment_holds_no_secret(sandbox, secret_env):
    for worker in sandbox._pool:
        environ = Path(f"/proc/{worker.proc.pid}/environ").read_bytes().decode()
        assert not any(secret in environ for secret in secret_env.values())


DAEMON_MARK = "crlab-rlimit-daemon-3f0a"


def test_rlimit_mode_kills_daemons_and_fork_bombs(rlimit_sandbox):
    spec = TestSpec(kind="stdin", inputs=("",), outputs=("never\n",))
    daemon = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', ['/bin/sleep', '30', '{DAEMON_MARK}'])\n    os._exit(0)\nprint('x')"
    )
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    assert [r.results[0].verdict for r in rlimit_sandbox.run_many([(daemon, spec), (bomb, spec)])] == [W, TO]
    alive = [p for p in os.listdir("/proc") if p.isdigit() and DAEMON_MARK.encode() in _cmdline(p)]
    assert alive == []
    assert rlimit_sandbox.run("print('never')", spec).pass_rate == 1.0


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


NON_ROOT_SCRIPT = """
import sys
from crlab.rewards import Sandbox, TestSpec
spec = TestSpec(kind="stdin", inputs=("1 2\\n",), outputs=("3\\n",))
good = "a, b = map(int, input().split())\\nprint(a + b)"
with Sandbox(workers=1, time_limit_s=1.0, memory_mb=256) as sb:
    programs = [good, "import os\\nos.kill(os.getppid(), 9)\\nprint(3)", good, "import os\\nos.kill(-1, 9)", good,
                "import os\\nprint(3 if os.path.exists('/work') or os.path.exists('/root/.pyenv') else 0)",
                "while True:\\n    pass", good]
    print(" ".join(sb.run(p, spec).results[0].verdict.value for p in programs))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root (to become nobody)")
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not on PATH")
def test_non_root_host():
    """As an unprivileged host user (nobody, with the system python): same verdicts; a test that kills the
    fork server (same uid) costs only that program a runtime error."""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.skip("no system python3 readable by nobody")
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(PLATFORM)!r})\n" + NON_ROOT_SCRIPT],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    # good, kills its server, good, kill(-1), good, looks for /work and /root, infinite loop, good
    expected = [
        "passed",
        "runtime_error",
        "passed",
        "runtime_error",
        "passed",
        "wrong_answer",
        "timeout",
        "passed",
    ]
    assert out.stdout.split() == expected


PREEMPT_SCRIPT = r"""
import json, signal, threading, time
import psutil
from crlab.rewards import Sandbox, TestSpec

seen = []
signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))  # as the trainer's stop flag does
spec = TestSpec("stdin", ("1 2\n", "3 4\n"), ("3\n", "7\n"))
program = "import time\ntime.sleep(0.4)\na, b = map(int, input().split())\nprint(a + b)"
with Sandbox(workers=1, time_limit_s=5) as sb:
    out = {}
    job = threading.Thread(target=lambda: out.setdefault("r", sb.run(program, spec)))
    job.start()
    time.sleep(0.2)
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        proc.send_signal(signal.SIGTERM)  # what Slurm does to every process of a job it preempts
    job.join()
    after = sb.run(program, spec)
print(json.dumps({"seen": seen, "during": [r.verdict.value for r in out["r"].results],
                  "after": [r.verdict.value for r in after.results]}))
"""


def test_a_preemption_signal_to_every_process_leaves_running_tests_alone() -> None:
    import json
    import sys

    res = subprocess.run([sys.executable, "-c", PREEMPT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["seen"] == [15]  # the host got the signal (to checkpoint and stop)...
    assert out["during"] == ["passed", "passed"]  # ...while the worker and the test in flight went on
    assert out["after"] == ["passed", "passed"]

"""Run untrusted programs (model output) against tests, in warm bubblewrap sandboxes (the only code in
crlab that executes model output).

How it works
    A :class:`Sandbox` owns ``workers`` workers. A worker is one long-lived Python fork server
    (``_harness.py``, ``_reuse.py``, ``_runner.py``, ``_server.py``; standard library only) inside its own
    bubblewrap sandbox; the host talks to it over two pipes, one length-prefixed JSON frame per program each
    way (plain data, nothing unpickled). The server has already imported what programs usually need and
    compiles each program once (compiling executes nothing). It forks a test process (the "child") for the
    program, which runs the tests one after another, each in a fresh copy of the program's namespace (its
    module code runs again for every test, stdin and functional alike) with its own stdin, stdout, stderr
    and result memfds, nonce, wall-clock limit and verdict. After each test the child settles and the server
    checks it (see "One child, many tests" below): the next test runs in it only if nothing is left that a
    fresh child would not have; otherwise, and after a timeout, a crash or a memory error, the child is
    killed, the sandbox swept and /tmp wiped, and the next test gets a new child. So a program costs about
    one fork (a few ms of CPU) and each test a fraction of a millisecond, not an interpreter start.
    ``run_many`` spreads programs over the workers. If a worker dies or stops answering, its program gets
    ``runtime_error`` on every test and a fresh worker replaces it.

Verdicts are computed outside the untrusted process
    The server (trusted, outside the child) reads the child's exit status, signals, CPU time and output
    size (a test that ends normally reports its exit status itself, over a socket to the server: what
    ``os._exit`` would have said, and a program can forge nothing with it that it could not by exiting);
    expected outputs never enter the sandbox: the host compares captured stdout (LiveCodeBench rules,
    :mod:`crlab.rewards.spec`) and functional return values, which the child must send as JSON made of
    exact JSON types only (an object overriding ``__eq__`` is rejected). An assert test (HumanEval
    ``check(candidate)``) passes only if a record with a per-test random nonce arrives on a randomly
    numbered fd, written by the harness after ``check`` returned: an early ``exit(0)``/``os._exit(0)`` is
    not a pass; the candidate's return values reach ``check`` deep-copied into exact builtin types.

What is isolated (``isolation="bwrap"``, the default)
    * Filesystem: a fresh root with only read-only binds of /usr (and the /bin, /lib... links), the
      interpreter's install prefix, /etc/ld.so.cache and /etc/localtime; a /proc of its own pid namespace;
      a minimal /dev; a private size-capped tmpfs /tmp, which every test finds empty. Not visible: home
      directories (if the interpreter lives under one, only its prefix shows), the repository, run
      directories, the rest of /etc, /var, /mnt, /work. All mounts are nosuid; no_new_privs is set.
    * Network: a network namespace of its own, so nothing outside is reachable, not even host loopback.
    * Processes: own pid, IPC and UTS namespaces and a new session; other processes are invisible and
      cannot be signalled. After every test no process is left but the child itself: if the test left a
      thread or any other process, all are killed (the server is a child subreaper and sends ``kill(-1)``),
      so daemons and double forks do not outlive their test.
    * Identity: when the host runs as root, tests run as an unprivileged uid (``uid_base`` + worker
      index, by default above 1e9; no groups, no capabilities) other than the server's, so a test can
      neither signal nor ptrace the server, and RLIMIT_NPROC holds (root is exempt from it). The server
      keeps only setuid/setgid, kill, chown, dac_override and fowner. When the host is not root, tests and
      server share the host uid in a user namespace (nested user namespaces disabled); the server is
      non-dumpable (no ptrace, no /proc/<pid>/mem) but a test can kill it, which costs a worker restart.
    * Environment: built from scratch (PATH, LANG, HOME, TMPDIR); no host variable (API keys, database
      URLs) reaches the sandbox, nor even the bwrap process.
    * Per test: RLIMIT_AS (``memory_mb``), RLIMIT_CPU, RLIMIT_NPROC, RLIMIT_FSIZE (also caps stdout/stderr,
      captured in memfds, at ``max_output_bytes``), RLIMIT_NOFILE, no core dumps, and a wall-clock limit
      after which the whole process group is SIGKILLed. RLIMIT_AS and RLIMIT_CPU count the whole child:
      it runs another test only while its address space is at most 8 MiB above the server's and it has
      used under 1 s of CPU, so RLIMIT_CPU (time limit rounded down + 2 s) can stop a later test at most
      1 s early, when it is past its time limit anyway. The child holds one fd more than a fresh process
      would (its socket to the server).

One child, many tests: what carries over
    Restored before every test (a fresh process would have them so): sys.stdin/stdout/stderr (new objects
    over new fds), recursion limit, int-to-str digit limit, switch interval, trace and profile hooks, gc
    enabled and thresholds, the decimal context, interval timers and ``alarm``. Checked by the child after
    every test, with the test's objects dropped and their finalizers run (any difference: next test in a
    new child): the imported modules and how many names each one holds, what the builtins are bound to,
    ``os.environ``, working directory, umask, open fds, process group, session, priority, CPU affinity,
    Python signal handlers, blocked and pending signals, rlimits, gc debug flags, garbage and callbacks,
    ``sys.path``, import hooks, ``sys.argv``, warnings filters and decimal's default context. Checked by the
    server, from outside: no thread, child, orphan or message left, no stdout written after the test ended,
    /tmp empty and its working directory as made, address space and CPU time within the bounds above.
    What can still carry over: changes the checks do not see (an existing module attribute rebound, e.g.
    ``math.gcd``; attributes of classes and functions, e.g. ``collections.Counter.__add__``; data put in
    existing containers, e.g. ``re``'s cache; state changed from C, e.g. ``os.putenv`` or audit hooks),
    memory left allocated (under 8 MiB), object addresses, timing. Programs that leave such state alone get
    the verdicts of a fresh interpreter per test (the benchmark compares them). A program can also keep
    state on purpose (the child's own checks run in its process and can be fooled), e.g. a table computed
    in its first test: that can only save it time on later tests (a timeout becoming a pass on a test it
    answers correctly), never turn a wrong answer into a pass: expected outputs never enter the sandbox,
    each verdict is a comparison on the host, and an assert test (one per program) gets its nonce when it
    starts.

What is not isolated
    * The kernel is shared: no seccomp filter, every syscall is available, a kernel exploit escapes. In
      root mode a test may create nested user namespaces (more kernel attack surface). The server compiles
      untrusted source (a compiler crash would only cost a worker restart).
    * No cgroups: memory is bounded per process by address space (RLIMIT_AS), not by RSS or in total; CPU
      by RLIMIT_CPU per process and the wall clock. A test can read /proc/cpuinfo, /proc/meminfo, the
      kernel version, timing, and everything under /usr.
    * The harness runs inside the program's process, so in-process code can subvert it: patch builtins or
      the harness, trace ``check`` with ``sys.settrace``, patch modules ``check`` imports, or find the
      completion fd (scanning its fds) and the nonce (in its own memory, e.g. the harness's frames) and
      forge an assert-test pass. For stdin and functional tests this buys nothing: the verdict is a
      comparison on the host, and the program only chooses which output it claims.
    * ``isolation="rlimit"`` (explicit opt-in, warns once): no namespaces. Same rlimits, cleared
      environment, private working directory, wall clock, process sweep and uid drop (root host); but the
      program sees the host filesystem and network and can signal same-uid processes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from . import lcb, prime
from ._harness import Harness, TestKind, Verdict
from ._worker import WORKER_SOURCE, SandboxError, _bwrap_argv, _Worker, numpy_binds
from .spec import TestSpec

_rlimit_warned = False
_E = TypeVar("_E", bound=StrEnum)


class Isolation(StrEnum):
    """What walls a worker has (``reward.isolation``): bwrap (namespaces, the default) | rlimit (weaker; warns)."""

    BWRAP = "bwrap"
    RLIMIT = "rlimit"


REWARD_HARNESSES = (Harness.STRICT, Harness.AUTHORS)  # reward.harness's choices (lcb is eval.scoring's)
_VERDICTS = frozenset({v.value for v in Verdict} | {None})  # what a worker may answer (None: compare here)
# Imported in LiveCodeBench's process before a program runs (its evaluator, the prelude, reliability_guard)
LCB_PRELOAD = ("numpy", "random", "statistics", "json", "datetime", "copy", "io", "subprocess", "shutil")


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    verdict: Verdict
    wall_s: float
    detail: str = ""


@dataclass(frozen=True)
class ProgramResult:
    results: tuple[TestResult, ...]

    @property
    def pass_rate(self) -> float:
        """Fraction of tests passed (0.0 for no tests)."""
        if not self.results:
            return 0.0
        return sum(r.verdict is Verdict.PASSED for r in self.results) / len(self.results)


def job_request(program: str, spec: TestSpec, n: int | None = None, harness: str = Harness.STRICT) -> dict:
    """What a fork server (or the benchmark's baseline) is sent to run ``program`` on ``spec``'s first ``n`` tests."""
    return {
        "kind": spec.kind, "program": program, "inputs": list(spec.inputs[:n]), "fn_name": spec.fn_name,
        "check_code": spec.check_code, "entry_point": spec.entry_point, "harness": harness,
    }  # fmt: skip


class SandboxIsolationWarning(RuntimeWarning):
    """Weaker isolation than the default was requested."""


class Sandbox:
    """A pool of sandboxed fork-server workers; use as ``with Sandbox() as sb: sb.run(program, spec)``.

    Limits hold per test: ``time_limit_s`` (wall clock), ``memory_mb`` (address space), ``max_output_bytes``
    (stdout, stderr, any file), ``nproc`` (processes and threads), ``nofile``; ``tmp_mb`` caps a worker's
    /tmp. Program text over ``max_program_bytes`` or not UTF-8 is a runtime error on every test.

    ``harness="lcb"`` runs and judges tests as LiveCodeBench's evaluator does (``_suite.py``, ``lcb.py``):
    all tests of a program in one process, module state and one ``Solution()`` shared, its prelude, no
    memory cap, numpy importable (its folder bound read-only), the first failure ending the run
    (``Verdict.NOT_RUN`` after it). ``harness="authors"`` runs and judges each test as the authors'
    training reward does (verl's ``prime_code``, :mod:`crlab.rewards.prime`): every test in one process at
    ``time_limit_s``; unless all pass, each of the first ``max_tests`` in a process of its own at
    ``second_time_limit_s``, as a stdin program whatever the spec's kind; its prelude, ``code()`` wrapper
    and lenient comparison, no memory cap, numpy importable. The isolation is the same.
    """

    def __init__(
        self,
        workers: int = 2,
        time_limit_s: float = 4.0,
        memory_mb: int = 1024,
        isolation: str = Isolation.BWRAP,
        max_output_bytes: int = 1 << 20,
        *,
        max_program_bytes: int = 1 << 20,
        nproc: int = 64,
        nofile: int = 128,
        tmp_mb: int = 64,
        uid_base: int | None = None,
        harness: str = Harness.STRICT,
        second_time_limit_s: float | None = None,
    ):
        if workers < 1 or time_limit_s <= 0 or memory_mb < 64 or max_output_bytes < 1024 or nofile < 48:
            raise ValueError("Sandbox: need workers >= 1, time_limit_s > 0, memory_mb >= 64, ...")
        self.harness = _choice(Harness, "harness", harness)
        self.isolation = _choice(Isolation, "isolation", isolation)
        self.second_time_limit_s = float(second_time_limit_s or time_limit_s)  # the authors' second pass
        self._binds, self._paths = numpy_binds() if self.harness != Harness.STRICT else ([], [])
        self.workers, self.time_limit_s, self.memory_mb = workers, float(time_limit_s), int(memory_mb)
        self.max_output_bytes, self.max_program_bytes = int(max_output_bytes), max_program_bytes
        self.nproc, self.nofile, self.tmp_mb = nproc, nofile, tmp_mb
        # root host only: worker i runs tests as uid_base + i; by default a block of 1024 uids above 1e9 picked
        # from our pid, so that concurrent Sandboxes do not share their RLIMIT_NPROC accounting
        self.uid_base = uid_base if uid_base is not None else 1_000_000_000 + (os.getpid() % 1_000_000) * 1024
        self._python = os.path.realpath(sys.executable)
        self._bwrap = shutil.which("bwrap") if self.isolation == Isolation.BWRAP else None
        if self.isolation == Isolation.BWRAP and self._bwrap is None:
            raise SandboxError(
                "bubblewrap (bwrap) is not on PATH, so untrusted code cannot be isolated. Install it "
                "(Debian/Ubuntu: apt-get install bubblewrap; `platform doctor --fix` does it) or choose isolation "
                "'rlimit' (reward.isolation=rlimit) to accept rlimits only."
            )
        if self.isolation == Isolation.RLIMIT:
            _warn_rlimit_once()
        self._pool: list[_Worker] = []
        self._bases: list[str] = []
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ lifecycle
    def _config(self, index: int, base: str) -> dict:
        return {
            "time_limit": self.time_limit_s,
            "memory_mb": self.memory_mb,
            "max_output": self.max_output_bytes,
            "nproc": self.nproc,
            "nofile": self.nofile,
            "uid": self.uid_base + index if os.geteuid() == 0 else None,
            "base": base,
            "kill_all": self.isolation == Isolation.BWRAP,
            "python": self._python,
            "script": None,
            "paths": self._paths,
            "preload": list(LCB_PRELOAD) if self.harness != Harness.STRICT else [],
        }

    def _argv(self, index: int) -> list[str]:
        if self.isolation == Isolation.BWRAP:
            prefix = _bwrap_argv(self._bwrap, self._python, self.tmp_mb << 20, tuple(self._binds))
            base = "/tmp"
        else:
            prefix, base = [], tempfile.mkdtemp(prefix="crlab-sandbox-")
            os.chmod(base, 0o711)
            self._bases.append(base)
        cfg = json.dumps(self._config(index, base))
        return prefix + [self._python, "-I", "-S", "-c", WORKER_SOURCE, "serve", cfg]

    def __enter__(self) -> Sandbox:
        try:
            for i in range(self.workers):
                worker = _Worker(self._argv(i))
                worker.start()
                self._pool.append(worker)
                self._idle.put(worker)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        return self

    def __exit__(self, *exc) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._executor = None
        for worker in self._pool:
            worker.stop()
        self._pool.clear()
        self._idle = queue.Queue()
        for base in self._bases:
            shutil.rmtree(base, ignore_errors=True)
        self._bases.clear()

    # ------------------------------------------------------------ running
    def run(self, program: str, spec: TestSpec, max_tests: int | None = None) -> ProgramResult:
        """Run ``program`` on the first ``max_tests`` tests of ``spec`` (all when None)."""
        return self.run_many([(program, spec)], max_tests)[0]

    def run_many(
        self, jobs: Sequence[tuple[str, TestSpec]], max_tests: int | None = None
    ) -> list[ProgramResult]:
        """Run many programs concurrently across the workers; results come back in input order."""
        if self._executor is None:
            raise SandboxError("Sandbox is not running; use it as a context manager: `with Sandbox() as sb:`")
        for _, spec in jobs:
            if not isinstance(spec, TestSpec):
                raise TypeError(f"run_many: expected TestSpec, got {type(spec).__name__}")
            if self.harness != Harness.STRICT and spec.kind == TestKind.ASSERT:
                raise ValueError(
                    f"run_many: the {self.harness} harness runs stdin and functional tests, not assert"
                )
        futures = [self._executor.submit(self._run_one, program, spec, max_tests) for program, spec in jobs]
        return [f.result() for f in futures]

    def _precheck(self, program) -> tuple[str, str | None]:
        """-> (problem, program text); a non-empty problem makes every test a runtime error."""
        if isinstance(program, (bytes, bytearray)):  # invalid bytes become lone surrogates, caught below
            program = bytes(program).decode("utf-8", "surrogateescape")
        if not isinstance(program, str):
            return f"program must be text, got {type(program).__name__}", None
        try:
            size = len(program.encode("utf-8"))
        except UnicodeEncodeError:
            return "program text is not valid UTF-8", None
        if size > self.max_program_bytes:
            return f"program text too large ({size} > {self.max_program_bytes} bytes)", None
        return "", program

    def _run_one(self, program, spec: TestSpec, max_tests: int | None) -> ProgramResult:
        n = len(spec) if max_tests is None else max(0, min(len(spec), max_tests))
        problem, program = self._precheck(program)
        if problem or n == 0:
            return ProgramResult(tuple(TestResult(Verdict.RUNTIME_ERROR, 0.0, problem) for _ in range(n)))
        # prime_code: every test in one process; if one fails, each of the first n
        if self.harness == Harness.AUTHORS:
            first = self._run_request(job_request(program, spec, None, Harness.AUTHORS), spec, len(spec))
            if all(r.verdict is Verdict.PASSED for r in first.results):
                return ProgramResult(first.results[:n])
            again, spec = prime.second_pass(program, spec, n, self.second_time_limit_s)
            return self._run_request(again, spec, n, self.second_time_limit_s)
        return self._run_request(job_request(program, spec, n, self.harness), spec, n)

    def _run_request(
        self, request: dict, spec: TestSpec, n: int, limit: float | None = None
    ) -> ProgramResult:
        raw = self._call(request, n, limit or self.time_limit_s)
        if raw is None:  # its worker died (the OOM killer, an operator): once more, on a fresh worker
            raw = self._call(request, n, limit or self.time_limit_s)
        if raw is None:  # twice: the program itself brings its worker down
            dead = TestResult(
                Verdict.RUNTIME_ERROR, 0.0, "sandbox worker died or misbehaved twice; restarted"
            )
            return ProgramResult((dead,) * n)
        if request["harness"] != Harness.STRICT:
            return _finish_suite(raw, spec, request["harness"])
        return ProgramResult(tuple(_finish(r, spec, i) for i, r in enumerate(raw)))

    def _call(self, request: dict, n: int, limit: float) -> list | None:
        """One run of a program on an idle worker; None when the worker died or misbehaved (it is replaced)."""
        worker = self._idle.get()
        try:
            return worker.call({"id": os.urandom(8).hex(), **request}, n, n * (limit + 1.0) + 10.0, _VERDICTS)
        finally:
            self._idle.put(worker)


def _finish(raw: dict, spec: TestSpec, i: int) -> TestResult:
    """Turn one raw server result into a verdict, comparing outputs here on the host when needed."""
    wall = float(raw.get("t", 0.0))
    if raw.get("v") is not None:
        return TestResult(Verdict(raw["v"]), wall, str(raw.get("d", "")))
    if spec.output_matches(i, str(raw.get("out" if spec.kind == TestKind.STDIN else "val", ""))):
        return TestResult(Verdict.PASSED, wall)
    return TestResult(Verdict.WRONG_ANSWER, wall, "output differs")


def _finish_suite(raw: list, spec: TestSpec, harness: Harness) -> ProgramResult:
    """Verdicts of the lcb harness (LiveCodeBench's rules; after the first failure, not run) or of the
    authors' one (their reward's rules; each test on its own)."""
    passes = lcb.entry_passes if harness == Harness.LCB else prime.entry_passes
    results, failed = [], False
    for i, r in enumerate(raw):
        wall = float(r.get("t", 0.0))
        if failed:
            results.append(TestResult(Verdict.NOT_RUN, 0.0, "an earlier test failed"))
            continue
        if r.get("v") is not None:
            result = TestResult(Verdict(r["v"]), wall, str(r.get("d", "")))
        elif passes(spec.kind, str(r.get("val", "")), spec.outputs[i]):
            result = TestResult(Verdict.PASSED, wall)
        else:
            result = TestResult(Verdict.WRONG_ANSWER, wall, "output differs")
        failed = harness == Harness.LCB and result.verdict is not Verdict.PASSED
        results.append(result)
    return ProgramResult(tuple(results))


def _choice(enum: type[_E], name: str, value: str) -> _E:
    if value not in tuple(enum):
        raise ValueError(f"Sandbox: {name} must be one of {', '.join(enum)}, got {value!r}")
    return enum(value)


def _warn_rlimit_once() -> None:
    global _rlimit_warned
    if not _rlimit_warned:
        _rlimit_warned = True
        warnings.warn(
            "crlab Sandbox(isolation='rlimit'): NO filesystem, network or process isolation. Untrusted programs "
            "can read your files and secrets on disk, use the network and signal your processes. Use the "
            "default isolation='bwrap' for model output.",
            SandboxIsolationWarning,
            stacklevel=3,
        )

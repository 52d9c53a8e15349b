"""The fork server of :mod:`crlab.rewards.sandbox` (standard library only).

One server per sandbox worker: ``python -I -S -c <source> serve <config json>``, the source being
``_harness.py``, ``_reuse.py``, ``_runner.py`` and this one. It reads requests (one program and the inputs
of its tests) from fd 0 and answers on fd 1, one frame each way (4-byte big-endian length, then JSON). It
compiles each program once and runs its tests in forked test processes (``_runner.Runner``): one after
another in the same process while it stays clean, in a new one otherwise. Expected outputs are never sent
here: the host compares, so no process in the sandbox ever holds an answer to copy. :func:`run_test`
instead execs a new interpreter for one test (the benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import struct
import sys
import time

with contextlib.suppress(ImportError):  # on the host; inside the sandbox _harness and _runner precede this
    from ._harness import Harness, TestKind, Verdict, _site_builtins, _stdio, child_env, namespace, prepare
    from ._runner import Runner, _memfd, _parse_record, _spare_fd, _sweep, _wipe, classify, setup_child
    from ._suite import EntryTag

# Imported once by the server so that forked children find them warm (competitive-programming staples).
# Not threading/queue nor random/statistics: their at-fork hooks (thread state reset, reseeding) would
# run in every forked child and cost more than importing them in the few programs that use them.
PRELOAD = [
    *("array", "bisect", "cmath", "collections", "copy", "datetime", "decimal", "enum", "fractions"),
    *("functools", "heapq", "itertools", "math", "operator", "re", "string", "typing", "abc"),
    *("contextlib", "numbers", "struct", "types", "unicodedata"),
]
_FORK_HOOKED = ("threading", "random")
_MAX_FRAME = 1 << 30


# ---------------------------------------------------------------- framing
def send_frame(fd: int, obj) -> None:
    data = json.dumps(obj).encode("ascii")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int):
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _read_exact(fd, n) if n <= _MAX_FRAME else None
    return None if body is None else json.loads(body)


# ---------------------------------------------------------------- baseline: one fresh interpreter per test
def _child(cfg: dict, fds, rfd, jfd) -> None:
    """After fork: set up (see ``_runner.setup_child``), then exec a fresh interpreter. Never returns."""
    try:
        setup_child(cfg, {fds[0]: 0, fds[1]: 1, fds[2]: 2, fds[3]: rfd, fds[4]: jfd})
        exe = cfg["python"]
        os.execve(exe, [exe, "-I", "-S", cfg["script"], "single", str(rfd), str(jfd)], child_env(cfg["cwd"]))
    finally:
        os._exit(71)


def _wait(pid: int, limit: float) -> tuple[bool, int, float]:
    """Wait up to ``limit`` seconds; on expiry kill the child's process group. -> (timed_out, status, cpu)."""
    try:
        pfd = os.pidfd_open(pid)
    except OSError:
        pfd = None
    timed_out = False
    if pfd is not None:
        poller = select.poll()
        poller.register(pfd, select.POLLIN)
        timed_out = not poller.poll(max(1, int(limit * 1000)))
        os.close(pfd)
    else:
        deadline = time.monotonic() + limit
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.001)
    if timed_out:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(pid, signal.SIGKILL)
    _, status, ru = os.wait4(pid, 0)
    return timed_out, status, ru.ru_utime + ru.ru_stime


def run_test(job: dict, index: int, cfg: dict) -> dict:
    """Run test ``index`` of ``job`` once in a fresh interpreter, which gets the job in a memfd.
    -> {"v": verdict|None, "out"|"val": text, "t": wall, "d": detail}."""
    kind = job["kind"]
    arg = job["inputs"][index] if kind != TestKind.ASSERT else None
    stdin = arg.encode("utf-8", "replace") if kind == TestKind.STDIN else b""
    nonce = os.urandom(16).hex()
    fds = [_memfd("stdin", stdin), _memfd("stdout"), _memfd("stderr"), _memfd("result")]
    blob = {"job": job, "args": arg, "nonce": nonce, "limit": cfg["max_output"]}
    fds.append(_memfd("job", json.dumps(blob).encode("ascii")))
    jfd = _spare_fd(cfg, set(fds))
    rfd = _spare_fd(cfg, set(fds) | {jfd})
    cfg = dict(cfg, cwd=os.path.join(cfg["base"], "run"))
    os.mkdir(cfg["cwd"], 0o700)
    if cfg.get("uid") is not None and os.geteuid() == 0:
        os.chown(cfg["cwd"], cfg["uid"], cfg["uid"])
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(cfg, fds, rfd, jfd)
    try:
        timed_out, status, cpu = _wait(pid, cfg["time_limit"])
        wall = time.monotonic() - t0
        _sweep(cfg["kill_all"])
        out_size = os.fstat(fds[1]).st_size
        rec = _parse_record(os.pread(fds[3], cfg["max_output"] + 4096, 0), nonce)
        verdict, detail = classify(kind, timed_out, status, cpu, rec, out_size, cfg)
        result = {"v": verdict, "t": round(wall, 6), "d": detail}
        if verdict is None and kind == TestKind.STDIN:
            result["out"] = os.pread(fds[1], out_size, 0).decode("utf-8", "replace")
        elif verdict is None:
            result["val"] = str(rec.get("v"))
        return result
    finally:
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(cfg["cwd"])  # the usual case: the test left nothing behind
        if os.listdir(cfg["base"]):
            _wipe(cfg["base"])


# ---------------------------------------------------------------- entry points
def _prctl(option: int, arg: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def _one_process(req: dict, cfg: dict, limit: float, wall: float, n: int) -> list:
    """Run the tests of ``req`` in ONE test process (``_suite.suite_case``) within ``wall`` seconds, with
    the limits of a test but memory (no cap) and output (the record holds every test's: the limit times
    ``n``). -> one raw result per test: its entry (compared on the host), its own verdict, "not_run" after
    the process stopped, or the verdict of the whole process for every test when it did not finish."""
    run_cfg = dict(cfg, time_limit=wall, memory_mb=None, max_output=cfg["max_output"] * n)
    proc = Runner(dict(req, time_limit=limit), run_cfg, (None, None, {}), 0)
    try:
        raw = proc.run(0)
    finally:
        proc.close()
    if raw["v"] is not None:
        if "signal 14" in raw.get("d", ""):  # the authors' harness: the alarm, unhandled, ended the process
            raw = dict(raw, v=Verdict.TIMEOUT, d=f"time limit {limit}s exceeded")
        return [dict(raw, d=raw.get("d") or "the process running the tests ended") for _ in range(n)]
    entries, results = json.loads(raw["val"]), []
    for i in range(n):
        if i >= len(entries):
            results.append({"v": Verdict.NOT_RUN, "t": 0.0, "d": "an earlier test failed", "k": 0})
            continue
        tag, payload, seconds = entries[i][0], entries[i][1:-1], entries[i][-1]
        verdict = _ENTRY_VERDICTS.get(tag)
        detail = (
            f"time limit {limit}s exceeded" if tag == EntryTag.TIMEOUT else (payload[0] if verdict else "")
        )
        results.append(
            {"v": verdict, "t": seconds or raw["t"], "d": detail, "k": 0, "val": json.dumps(entries[i][:-1])}
        )
    return results


_ENTRY_VERDICTS = {  # the verdict of a suite's test entry that is not compared on the host
    EntryTag.TIMEOUT: Verdict.TIMEOUT, EntryTag.ERROR: Verdict.RUNTIME_ERROR, EntryTag.UNSENDABLE: Verdict.WRONG_ANSWER,
}  # fmt: skip


def run_suite(req: dict, cfg: dict) -> list:
    """The tests of a program under another evaluator's rules. ``lcb``: all in one process, within the
    wall-clock limit LiveCodeBench gives a program, (time limit + 1) x tests + 5 s. ``authors`` (verl's
    ``check_correctness`` joins its process at time limit + 1 s): all in one process within that, or with
    ``per_test`` each in a process of its own within it. ``time_limit`` in the request overrides the worker's."""
    n, limit = len(req["inputs"]), float(req.get("time_limit") or cfg["time_limit"])
    if req["harness"] == Harness.LCB:
        return _one_process(req, cfg, limit, (limit + 1) * n + 5, n)
    if not req.get("per_test"):
        return _one_process(req, cfg, limit, limit + 1, n)
    return [_one_process(dict(req, inputs=[text]), cfg, limit, limit + 1, 1)[0] for text in req["inputs"]]


def run_program(req: dict, cfg: dict, templates: dict) -> list:
    """All tests of one program: compiled once here, then run one after another in a test process, which
    is replaced whenever it is not as clean as a fresh one (see ``_runner.Runner.reusable``)."""
    if req["harness"] != Harness.STRICT:
        return run_suite(req, cfg)
    n = len(req["inputs"]) if req["kind"] != TestKind.ASSERT else 1
    prepared, error = prepare(req, templates[req["kind"]])
    if prepared is None:  # a program that does not compile fails every test the same way
        return [{"v": Verdict.RUNTIME_ERROR, "t": 0.0, "d": "does not compile: " + error} for _ in range(n)]
    results, proc, serial = [], None, 0
    try:
        for i in range(n):
            if proc is None:
                proc, serial = Runner(req, cfg, prepared, serial), serial + 1
            results.append(proc.run(i, i + 1 if i + 1 < n else None))
            if i == n - 1 or not proc.reusable():
                proc.close()
                proc = None
    finally:
        if proc is not None:
            proc.close()
    return results


def serve(cfg: dict) -> None:
    # PR_SET_CHILD_SUBREAPER: orphaned grandchildren are re-parented to the server (essential without a pid ns)
    if not _prctl(36, 1) and not cfg["kill_all"]:
        raise SystemExit("crlab sandbox: cannot become a child subreaper (prctl); refusing to run tests")
    _prctl(4, 0)  # PR_SET_DUMPABLE=0: same-uid children cannot ptrace the server or read its memory
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the host (or with bwrap's init)
    _site_builtins()
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(name)
    os.environ.clear()  # set once here: children inherit it (the host's environment never got here)
    os.environ.update(child_env(os.path.join(cfg["base"], "run")))
    sys.path.extend(cfg.get("paths", ()))  # the lcb harness: numpy's folder (bound read-only) importable
    if cfg.get("preload"):  # the lcb harness: what LiveCodeBench's process has imported before a program runs
        os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # (no BLAS threads to fork)
        for name in cfg["preload"]:
            with contextlib.suppress(ImportError):
                __import__(name)
    _stdio()  # for messages on stderr (the server uses os.read/os.write; test processes make their own)
    for name in _FORK_HOOKED:
        if name in sys.modules and not cfg.get("preload"):
            sys.stderr.write(f"crlab sandbox: {name} is imported in the fork server; forks will be slower\n")
    templates = {kind: namespace(kind) for kind in TestKind}
    gc.collect()
    gc.freeze()  # test processes then neither scan nor copy the server's objects when they collect
    send_frame(1, {"hello": os.getpid(), "uid": os.geteuid()})
    while True:
        req = recv_frame(0)
        if req is None:
            return
        send_frame(1, {"id": req["id"], "results": run_program(req, cfg, templates)})


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(json.loads(sys.argv[2]))

"""The fork server of :mod:`crlab.rewards.sandbox` (standard library only).

One server per sandbox worker: ``python -I -S -c <_harness.py source + this source> serve <config json>``.
It reads requests (one program and the inputs of its tests) from fd 0 and answers on fd 1, one frame each
way (4-byte big-endian length, then JSON). Per test it forks a child that runs ``_harness.harness``, waits
with a wall-clock limit, kills every process left over, and reports the raw outcome. Expected outputs are
never sent here: the host compares, so no process in the sandbox ever holds an answer to copy.
:func:`run_test` without ``prepared`` execs a new interpreter instead of running the harness in the fork
(the benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import struct
import sys
import time

with contextlib.suppress(ImportError):  # on the host; inside the sandbox the harness source precedes this
    from ._harness import (
        _drop_privileges,
        _site_builtins,
        _stdio,
        apply_limits,
        child_env,
        harness,
        namespace,
        prepare,
    )

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


# ---------------------------------------------------------------- one test (server side)
def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name)
    if data:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _spare_fd(cfg: dict, taken: set) -> int:
    while True:
        fd = 16 + int.from_bytes(os.urandom(2), "big") % max(1, cfg["nofile"] - 24)
        if fd not in taken:
            return fd


def _child(job, args_text, cfg, fds, rfd, nonce, jfd, prepared) -> None:
    """After fork: new session, stdio onto memfds, close the rest, limits, drop uid, run. Never returns."""
    try:
        os.setsid()
        targets = {fds[0]: 0, fds[1]: 1, fds[2]: 2, fds[3]: rfd}
        if jfd is not None:
            targets[fds[4]] = jfd
        for src, dst in targets.items():
            os.dup2(src, dst)
        low = 3
        for keep in sorted(targets.values()):
            if keep >= 3:
                os.closerange(low, keep)
                low = keep + 1
        os.closerange(low, 1 << 20)
        os.chdir(cfg["cwd"])
        apply_limits(cfg)
        _drop_privileges(cfg.get("uid"))
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if jfd is not None:
            exe = cfg["python"]
            os.execve(
                exe, [exe, "-I", "-S", cfg["script"], "single", str(rfd), str(jfd)], child_env(cfg["cwd"])
            )
        harness(job, args_text, rfd, nonce, cfg["max_output"], prepared)
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


def _children() -> list[int]:
    with contextlib.suppress(OSError), open(f"/proc/self/task/{os.getpid()}/children") as f:
        return [int(p) for p in f.read().split()]
    # a kernel without CONFIG_PROC_CHILDREN: scan /proc for our children
    me, kids = os.getpid(), []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                    kids.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return kids


def _sweep(kill_all: bool) -> None:
    """Kill every process left over by the test. In a private pid namespace ``kill(-1)`` reaches all of
    them at once; and the server is a child subreaper, so orphans come to it to be killed and reaped."""
    if kill_all:
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
    for _ in range(10_000):
        kids = _children()
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _wipe(base: str) -> None:
    def fix(func, path, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)

    for entry in os.scandir(base):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, onerror=fix)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _parse_record(raw: bytes, nonce: str) -> dict:
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return rec if isinstance(rec, dict) and rec.get("n") == nonce else {}


def classify(kind, timed_out, status, cpu, rec, out_size, cfg) -> tuple[str | None, str]:
    """Verdict from facts gathered outside the child. ``None`` means: compare the output on the host."""
    s = rec.get("s")
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if timed_out or sig == signal.SIGXCPU or cpu >= cfg["time_limit"]:
        return "timeout", f"time limit {cfg['time_limit']}s exceeded"
    if s == "memory":
        return "memory_exceeded", f"memory limit {cfg['memory_mb']} MB exceeded"
    if out_size >= cfg["max_output"] or s == "outlimit":
        return "runtime_error", "output limit exceeded"
    if s == "compile":
        return "runtime_error", "does not compile: " + str(rec.get("e", ""))
    if kind == "stdin" and code == 0:
        return None, ""
    if s == "ok" and kind != "stdin":
        return (None if kind == "functional" else "passed"), ""
    if s == "badtype":
        return "wrong_answer", str(rec.get("e", ""))
    if s == "assert":
        return "wrong_answer", "check failed: " + str(rec.get("e", ""))
    if s in ("exc", "exit"):
        return "runtime_error", str(rec.get("e", "") or s)
    if sig:
        return "runtime_error", f"killed by signal {sig}"
    return "runtime_error", f"exited (status {code}) without a result record"


def run_test(job: dict, index: int, cfg: dict, prepared=None) -> dict:
    """Run test ``index`` of ``job`` once. -> {"v": verdict|None, "out"|"val": text, "t": wall, "d": detail}."""
    kind = job["kind"]
    arg = job["inputs"][index] if kind != "assert" else None
    stdin = arg.encode("utf-8", "replace") if kind == "stdin" else b""
    nonce = os.urandom(16).hex()
    fds = [_memfd("stdin", stdin), _memfd("stdout"), _memfd("stderr"), _memfd("result")]
    jfd = None
    if prepared is None:  # a fresh interpreter per test (benchmark baseline): it gets the job in a memfd
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
        _child(job, arg, cfg, fds, rfd, nonce, jfd, prepared)
    try:
        timed_out, status, cpu = _wait(pid, cfg["time_limit"])
        wall = time.monotonic() - t0
        _sweep(cfg["kill_all"])
        out_size = os.fstat(fds[1]).st_size
        rec = _parse_record(os.pread(fds[3], cfg["max_output"] + 4096, 0), nonce)
        verdict, detail = classify(kind, timed_out, status, cpu, rec, out_size, cfg)
        result = {"v": verdict, "t": round(wall, 6), "d": detail}
        if verdict is None and kind == "stdin":
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


def run_program(req: dict, cfg: dict, templates: dict) -> list:
    """All tests of one program: compiled once here, then one forked child per test."""
    n = len(req["inputs"]) if req["kind"] != "assert" else 1
    prepared, error = prepare(req, templates[req["kind"]])
    if prepared is None:  # a program that does not compile fails every test the same way
        return [{"v": "runtime_error", "t": 0.0, "d": "does not compile: " + error} for _ in range(n)]
    return [run_test(req, i, cfg, prepared) for i in range(n)]


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
    _stdio()  # objects over fds 0-2 for the children (the server itself only uses os.read/os.write)
    for name in _FORK_HOOKED:
        if name in sys.modules:
            sys.stderr.write(f"crlab sandbox: {name} is imported in the fork server; forks will be slower\n")
    templates = {kind: namespace(kind) for kind in ("stdin", "functional", "assert")}
    send_frame(1, {"hello": os.getpid(), "uid": os.geteuid()})
    while True:
        req = recv_frame(0)
        if req is None:
            return
        send_frame(1, {"id": req["id"], "results": run_program(req, cfg, templates)})


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(json.loads(sys.argv[2]))

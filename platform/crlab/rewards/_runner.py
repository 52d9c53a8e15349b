"""Test processes of the fork server of :mod:`crlab.rewards.sandbox` (standard library only).

Shipped into the sandbox after ``_harness.py`` and ``_reuse.py``, before ``_server.py`` (one source). A
:class:`Runner` is forked for one program and runs its tests one after another (``_reuse.serve_tests``):
per test the server sends the index, a fresh nonce and four fresh memfds (stdin, stdout, stderr, result)
over a socket, waits with the wall-clock limit and computes the raw outcome from what it sees itself. The
process runs the next test only if it settled ("R1") and :meth:`Runner.reusable` finds nothing a fresh
process would not have; otherwise, and after a timeout or a crash, it is killed, the sandbox swept and
/tmp wiped, and the next test gets a new process. Also here, shared with the baseline in
``_server.run_test``: memfds, the child's setup, the sweep, the wipe and :func:`classify`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import time

with contextlib.suppress(ImportError):  # on the host; inside the sandbox _harness and _reuse precede this
    from ._harness import CaseStatus, Harness, TestKind, Verdict, _drop_privileges, apply_limits
    from ._reuse import serve_tests

_HZ = os.sysconf("SC_CLK_TCK")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# Address space a test may leave behind (freed memory that the allocator keeps) and still let the next test
# run in the same process; beyond it the next test gets a fresh process, whose limit is all its own.
VSIZE_SLACK = 8 << 20
# CPU seconds a test process may have used and still run another test. RLIMIT_CPU (a test's time limit,
# rounded down, + 2 s) counts the whole process, so a later test may meet it up to this much sooner; it
# then still has used more than its time limit, which is a timeout either way.
CPU_BUDGET = 1.0


# ---------------------------------------------------------------- helpers (also used by the baseline)
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


def _free_fd(cfg: dict, taken: set) -> int:
    """A spare fd number that is not open here either."""
    while True:
        fd = _spare_fd(cfg, taken)
        try:
            os.fstat(fd)
        except OSError:
            return fd
        taken = taken | {fd}


def setup_child(cfg: dict, targets: dict) -> None:
    """After fork: new session, fds ``targets`` (src -> dst) in place and every other fd closed, working
    directory ``cfg["cwd"]``, rlimits, unprivileged uid, no blocked signal."""
    os.setsid()
    for src, dst in targets.items():
        os.dup2(src, dst)
    low = 0
    for keep in sorted(set(targets.values())):
        if low < keep:  # (closerange(n, n) would close everything from n on)
            os.closerange(low, keep)
        low = keep + 1
    os.closerange(low, 1 << 20)
    os.chdir(cfg["cwd"])
    apply_limits(cfg)
    _drop_privileges(cfg.get("uid"))
    # The stop signals a scheduler sends to a whole job (see _worker._STOP_SIGNALS) stay blocked in tests too:
    # a preemption must not turn a running test into a runtime error. Timeouts use SIGKILL.
    signal.pthread_sigmask(signal.SIG_SETMASK, STOP_SIGNALS)


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _children(pid: int | None = None) -> list[int]:
    """Child pids of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    with contextlib.suppress(OSError):
        return [int(p) for p in _read(f"/proc/{pid}/task/{pid}/children").split()]
    # a kernel without CONFIG_PROC_CHILDREN: scan /proc for the children
    kids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(_read(f"/proc/{name}/stat").rsplit(b")", 1)[1].split()[1]) == pid:
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


def classify(kind, timed_out, status, cpu, rec, out_size, cfg: dict) -> tuple[str | None, str]:
    """Verdict from facts gathered outside the child. ``None`` means: compare the output on the host."""
    s = rec.get("s")
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if timed_out or sig == signal.SIGXCPU or cpu >= cfg["time_limit"]:
        return Verdict.TIMEOUT, f"time limit {cfg['time_limit']}s exceeded"
    if s == CaseStatus.MEMORY:
        return Verdict.MEMORY_EXCEEDED, f"memory limit {cfg['memory_mb']} MB exceeded"
    if out_size >= cfg["max_output"] or s == CaseStatus.OUTLIMIT:
        return Verdict.RUNTIME_ERROR, "output limit exceeded"
    if s == CaseStatus.COMPILE:
        return Verdict.RUNTIME_ERROR, "does not compile: " + str(rec.get("e", ""))
    if kind == TestKind.STDIN and code == 0:
        return None, ""
    if s == CaseStatus.OK and kind != TestKind.STDIN:
        return (None if kind == TestKind.FUNCTIONAL else Verdict.PASSED), ""
    if s == CaseStatus.BADTYPE:
        return Verdict.WRONG_ANSWER, str(rec.get("e", ""))
    if s == CaseStatus.ASSERT:
        return Verdict.WRONG_ANSWER, "check failed: " + str(rec.get("e", ""))
    if s in (CaseStatus.EXC, CaseStatus.EXIT):
        return Verdict.RUNTIME_ERROR, str(rec.get("e", "") or s)
    if sig:
        return Verdict.RUNTIME_ERROR, f"killed by signal {sig}"
    return Verdict.RUNTIME_ERROR, f"exited (status {code}) without a result record"


def _proc_stat(pid: int) -> tuple[float, float, int, int] | None:
    """-> (CPU seconds with reaped children, own CPU seconds, threads, address space bytes) of ``pid``."""
    try:
        f = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
        utime, stime, cutime, cstime = (int(x) for x in f[11:15])
        return (utime + stime + cutime + cstime) / _HZ, (utime + stime) / _HZ, int(f[17]), int(f[20])
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------- one test process, many tests
class Runner:
    """A forked test process that runs the tests of one program (``serial``: its rank within the program)."""

    def __init__(self, job: dict, cfg: dict, prepared: tuple, serial: int):
        self.job, self.cfg, self.serial = job, cfg, serial
        self.cwd = os.path.join(cfg["base"], "run")
        os.mkdir(self.cwd, 0o700)
        if cfg.get("uid") is not None and os.geteuid() == 0:
            os.chown(self.cwd, cfg["uid"], cfg["uid"])
        self.cwd_mode = (os.stat(self.cwd).st_mode, os.stat(self.cwd).st_uid)
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.rfd = _spare_fd(cfg, {self.sock.fileno(), theirs.fileno()})
        # the test process's end of the socket at a random high number too (like the result fd): the low
        # numbers stay free for the program, as in a fresh process
        sfd = _free_fd(cfg, {self.sock.fileno(), theirs.fileno(), self.rfd})
        os.dup2(theirs.fileno(), sfd, inheritable=False)
        theirs.close()
        theirs = socket.socket(fileno=sfd)
        self.vsize_cap = (_proc_stat(os.getpid()) or (0, 0, 0, 0))[3] + VSIZE_SLACK
        self.pid = os.fork()
        if self.pid == 0:
            try:
                setup_child(dict(cfg, cwd=self.cwd), {theirs.fileno(): theirs.fileno()})
                serve_tests(job, prepared, self.rfd, theirs, cfg["max_output"])
            finally:
                os._exit(71)
        theirs.close()
        self.alive, self.fit, self.hung_up, self.fds, self.ahead = True, False, False, [], (None, [])
        self.out_size, self.cpu_mark = 0, 0.0
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        try:
            self.pidfd = os.pidfd_open(self.pid)
            self.poller.register(self.pidfd, select.POLLIN)
        except OSError:
            self.pidfd = None

    def _make_fds(self, index: int) -> list[int]:
        """Fresh stdin (holding the test's input), stdout, stderr and result memfds for test ``index``."""
        suite = self.job["harness"] != Harness.STRICT  # (a suite's tests get their input in-process)
        arg = self.job["inputs"][index] if self.job["kind"] == TestKind.STDIN and not suite else ""
        fds = [_memfd("stdin", arg.encode("utf-8", "replace"))]
        return fds + [_memfd("stdout"), _memfd("stderr"), _memfd("result")]

    def run(self, index: int, upcoming: int | None = None) -> dict:
        """Run test ``index`` (and meanwhile make the fds of test ``upcoming``).
        -> {"v": verdict|None, "out"|"val": text, "t": wall, "d": detail, "k": serial}."""
        cfg, kind = self.cfg, self.job["kind"]
        nonce = os.urandom(16).hex()
        self._close_fds()
        (ahead, fds), self.ahead = self.ahead, (None, [])
        if ahead != index:
            for fd in fds:
                os.close(fd)
            fds = self._make_fds(index)
        self.fds = fds
        cpu0 = self.cpu_mark  # its CPU time when it settled (or 0: forked for this test)
        t0 = time.monotonic()
        with contextlib.suppress(OSError):  # a process that is gone shows in _await
            socket.send_fds(self.sock, [index.to_bytes(4, "big") + nonce.encode("ascii")], fds)
        if upcoming is not None:
            self.ahead = (upcoming, self._make_fds(upcoming))
        msg = self._await(t0 + cfg["time_limit"])
        wall = time.monotonic() - t0
        if isinstance(msg, bytes) and len(msg) == 10 and msg[:1] == b"D" and msg[1:2] in (b"0", b"1"):
            stat = _proc_stat(self.pid)  # (a test that left threads or much memory: not worth settling)
            status, cpu, self.fit = int(msg[1:2]) << 8, (stat or (cpu0,))[0] - cpu0, self._within(stat)
            # what the test wrote before it ended; later writes (finalizers) are not its output
            self.out_size = min(int.from_bytes(msg[2:], "big"), os.fstat(fds[1]).st_size)
        else:  # exited, killed, timed out or broke the protocol: it ends here
            status, cpu = self._reap()
            cpu -= cpu0
            self.out_size = os.fstat(fds[1]).st_size
        size = min(os.fstat(fds[3]).st_size, cfg["max_output"] + 4096)  # (a 1 MB read buffer costs time)
        rec = _parse_record(os.pread(fds[3], size, 0), nonce)
        verdict, detail = classify(kind, msg is False, status, cpu, rec, self.out_size, cfg)
        result = {"v": verdict, "t": round(wall, 6), "d": detail, "k": self.serial}
        if verdict is None and kind == TestKind.STDIN and self.job["harness"] == Harness.STRICT:
            result["out"] = os.pread(fds[1], self.out_size, 0).decode("utf-8", "replace")
        elif verdict is None:
            result["val"] = str(rec.get("v"))
        return result

    def _await(self, deadline: float):
        """The process's next message: bytes; None once it exited; False at ``deadline``. If it closed its
        end of the socket it can send nothing more, but it may still be running its test: then wait for it
        to exit, as for a process that runs one test alone."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = left if self.pidfd is not None else min(left, 0.01)  # (without a pidfd: poll for the exit)
            ready = dict(self.poller.poll(max(1, int(wait * 1000))))
            if not self.hung_up and ready.pop(self.sock.fileno(), 0):
                try:
                    msg = self.sock.recv(64, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    msg = b""
                if msg or self.pidfd is None:
                    return msg or None
                self.hung_up = True
                self.poller.unregister(self.sock)
            if ready or (self.pidfd is None and self._exited()):
                return None

    def _exited(self) -> bool:
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def _reap(self) -> tuple[int, float]:
        """Kill the process and its group, reap it, sweep the sandbox. -> (wait status, CPU seconds)."""
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(self.pid, signal.SIGKILL)
        _, status, ru = os.wait4(self.pid, 0)
        self.alive = False
        _sweep(self.cfg["kill_all"])
        return status, ru.ru_utime + ru.ru_stime

    def _within(self, stat) -> bool:
        """One thread, and address space and CPU time within the bounds for running another test."""
        return stat is not None and stat[2] == 1 and stat[3] <= self.vsize_cap and stat[1] < CPU_BUDGET

    def reusable(self) -> bool:
        """Whether the next test may run in this process: it settled ("R1", see ``_reuse._settle``) and
        left nothing a fresh process would not have: no message, late output, thread or other process, file
        in /tmp, change to its working directory; address space and CPU time within bounds."""
        try:
            if not (self.alive and self.fit) or self.hung_up:
                return False
            if self._await(time.monotonic() + max(1.0, self.cfg["time_limit"])) != b"R1":
                return False
            if select.select([self.sock], [], [], 0)[0] or os.fstat(self.fds[1]).st_size != self.out_size:
                return False
            stat = _proc_stat(self.pid)
            if not self._within(stat) or _children() != [self.pid] or _children(self.pid):
                return False
            self.cpu_mark, st = stat[0], os.stat(self.cwd)
            clean_tmp = os.listdir(self.cfg["base"]) == ["run"] and not os.listdir(self.cwd)
            return clean_tmp and (st.st_mode, st.st_uid) == self.cwd_mode
        finally:
            self._close_fds()

    def _close_fds(self, ahead: bool = False) -> None:
        for fd in self.fds + (self.ahead[1] if ahead else []):
            os.close(fd)
        self.fds = []
        if ahead:
            self.ahead = (None, [])

    def close(self) -> None:
        """End the process (if it still runs), sweep the sandbox and clean /tmp for the next one."""
        if self.alive:
            self._reap()
        self._close_fds(ahead=True)
        self.sock.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        with contextlib.suppress(OSError):
            os.rmdir(self.cwd)  # the usual case: the tests left nothing behind
        if os.listdir(self.cfg["base"]):
            _wipe(self.cfg["base"])

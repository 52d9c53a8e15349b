"""The workers of :mod:`crlab.rewards.sandbox`: the bubblewrap command line and the host's handle on one
fork server (``_harness.py``, ``_reuse.py``, ``_runner.py`` and ``_server.py`` shipped as one source).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from crlab.errors import CrlabError

from . import _harness, _prime, _reuse, _runner, _server, _suite

# The fork server's program: harness, whole-suite harnesses, test-process loop, test processes, server (one -c string; nothing of
# the repository is mounted in the sandbox). Only the first module keeps its __future__ import.
WORKER_SOURCE = "\n".join(
    [Path(_harness.__file__).read_text()]
    + [
        Path(module.__file__).read_text().replace("from __future__ import annotations\n", "")
        for module in (_suite, _prime, _reuse, _runner, _server)
    ]
)
_SERVER_CAPS = ("SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER")
# Signals that ask the trainer to stop. Schedulers send them to every process of a job (Slurm on preemption,
# requeue or scancel), workers included; a worker killed by one would turn the programs it is running into
# runtime errors and spoil the step the trainer is about to checkpoint. They are blocked in the worker
# (bwrap and the server inherit the mask, and test processes keep them blocked); workers end by
# SIGKILL in stop(), or when the host process dies.
_STOP_SIGNALS = set(_runner.STOP_SIGNALS)


class SandboxError(CrlabError, RuntimeError):
    """The sandbox cannot run (bwrap missing or failing, used outside ``with``)."""


def _bwrap_has(bwrap: str, option: str) -> bool:
    out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    return option in out.stdout + out.stderr


def numpy_binds() -> tuple[list[str], list[str]]:
    """(folders to bind read-only, sys.path entries) that make the host's numpy importable in a sandbox:
    its package folder and its bundled libraries (``numpy.libs``), nothing else of their site-packages."""
    import importlib.util

    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.origin:
        return [], []
    package = Path(spec.origin).resolve().parent
    folders = [str(p) for p in (package, package.parent / "numpy.libs") if p.is_dir()]
    return folders, [str(package.parent)]


def _bwrap_argv(bwrap: str, python: str, tmp_bytes: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Mounts and namespaces of one worker (see the docstring of :mod:`crlab.rewards.sandbox`); ``extra``:
    more folders bound read-only at their own paths."""
    a = [bwrap, "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            a += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            a += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            a += ["--ro-bind", f, f]
    # the private /tmp first: a folder bound below under /tmp (a venv in a clone there) goes on top of it
    a += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    prefixes = sorted({sys.base_prefix, sys.base_exec_prefix, str(Path(python).parent.parent)})
    for prefix in prefixes + list(extra):
        if prefix == "/usr" or prefix.startswith("/usr/") or not os.path.isdir(prefix):
            continue
        for parent in reversed(Path(prefix).parents[:-1]):  # /root, /root/.pyenv, ... made traversable
            if str(parent) not in made:
                made.add(str(parent))
                a += ["--perms", "0755", "--dir", str(parent)]
        a += ["--ro-bind", prefix, prefix]
    a += ["--proc", "/proc", "--dev", "/dev"]
    a += ["--chdir", "/tmp", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    a += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    a += ["--setenv", "PATH", _harness.CHILD_ENV_PATH, "--setenv", "LANG", "C.UTF-8"]
    if os.geteuid() == 0:
        a += ["--cap-drop", "ALL"]
        for cap in _SERVER_CAPS:
            a += ["--cap-add", f"CAP_{cap}"]
    else:
        a += ["--unshare-user"] + (["--disable-userns"] if _bwrap_has(bwrap, "--disable-userns") else [])
    return a + ["--"]


class _Worker:
    """One fork server process and its pipes. Not thread-safe: the pool hands it to one job at a time."""

    def __init__(self, argv: list[str]):
        self.argv, self.proc, self._err = argv, None, None

    def start(self, timeout: float = 60.0) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker; closed in stop())
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # pending ones reach us on restore
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._err,
                env={"PATH": _harness.CHILD_ENV_PATH, "LANG": "C.UTF-8"},
                close_fds=True,
                start_new_session=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        hello = self._recv(timeout)
        if not isinstance(hello, dict) or "hello" not in hello:
            self._err.seek(0)
            tail = self._err.read()[-2000:].decode("utf-8", "replace")
            self.stop()
            raise SandboxError(f"sandbox worker failed to start ({' '.join(self.argv[:1])}): {tail}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout, self._err):
                f.close()
        self.proc = None

    def _recv(self, timeout: float):
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return None
        try:
            return _server.recv_frame(fd)  # once a frame starts, the server writes it whole
        except (OSError, ValueError):
            return None

    def call(self, req: dict, n: int, timeout: float, verdicts: frozenset) -> list | None:
        """Send one program; return its raw per-test results (each with a verdict in ``verdicts`` or None),
        or None (the worker is then restarted lazily)."""
        if self.proc is None or self.proc.poll() is not None:  # died between jobs: replace it first
            self.stop()
            self.start()
        try:
            _server.send_frame(self.proc.stdin.fileno(), req)
            resp = self._recv(timeout)
        except OSError:
            resp = None
        results = resp.get("results") if isinstance(resp, dict) and resp.get("id") == req["id"] else None
        ok = isinstance(results, list) and len(results) == n
        if not (ok and all(isinstance(r, dict) and r.get("v") in verdicts for r in results)):
            self.stop()
            return None
        return results

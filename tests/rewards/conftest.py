"""Shared fixtures: one bwrap Sandbox and one rlimit Sandbox per test module (workers stay warm)."""

from __future__ import annotations

import os
import shutil
import socket
import string
import subprocess
import warnings
from pathlib import Path

import pytest

from crlab.rewards import Sandbox, SandboxIsolationWarning, TestSpec, Verdict

SECRETS = {
    "WANDB_API_KEY": "wandb-secret-4f1d9c2e7a",
    "DATABASE_URL": "postgresql://crlab:hunter2-secret@db.internal/crlab",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-93be11c0",
}


@pytest.fixture(scope="module")
def secret_env():
    """Secrets in the host environment while the sandbox starts (they must never reach a program)."""
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)
    yield SECRETS
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def sandbox(secret_env):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH; install it: apt-get install bubblewrap")
    with Sandbox(workers=2, time_limit_s=1.0, memory_mb=512, max_output_bytes=1 << 16) as sb:
        yield sb


@pytest.fixture(scope="module")
def rlimit_sandbox(secret_env):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        sb = Sandbox(workers=2, time_limit_s=1.0, memory_mb=512, isolation="rlimit", max_output_bytes=1 << 16)
    with sb:
        yield sb


# ---------------------------------------------------------------- hostile programs (test_hostile*, test_forgery)
REPO = Path(__file__).resolve().parents[2]
MARKER = "crlab-hostile-marker-7c1e"
SENTINEL_TEXT = "sentinel-content-0b6f"
NETRC_TEXT = "machine api.wandb.ai login user password netrc-secret-55aa"
P, W, RE, TO, ME = (
    Verdict.PASSED,
    Verdict.WRONG_ANSWER,
    Verdict.RUNTIME_ERROR,
    Verdict.TIMEOUT,
    Verdict.MEMORY_EXCEEDED,
)
NOT_PASSED = frozenset({W, RE, TO, ME})
ADD_CHECK = (
    "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(10, 20) - 30) < 1e-9\n"
)
HOSTILE_SPECS = {
    # a hostile program prints PWNED only if its attack worked: a pass means an escape
    "pwned": TestSpec(kind="stdin", inputs=("",), outputs=("PWNED\n",)),
    "sentinel": TestSpec(kind="stdin", inputs=("",), outputs=(SENTINEL_TEXT,)),
    "add-stdin": TestSpec(kind="stdin", inputs=("1 2\n",), outputs=("3\n",)),
    "add-func": TestSpec(
        kind="functional", inputs=("[1, 2]", "[10, 20]"), outputs=("3", "30"), fn_name="add"
    ),
    "add-assert": TestSpec(kind="assert", inputs=(), outputs=(), check_code=ADD_CHECK, entry_point="add"),
}
CORRECT = [
    ("a, b = map(int, input().split())\nprint(a + b)", "add-stdin"),
    ("def add(a, b):\n    return a + b", "add-func"),
    ("def add(a, b):\n    return a + b", "add-assert"),
]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Host state that must survive: a sentinel file, a fake HOME with .netrc, a loopback listener, a process."""
    root = tmp_path_factory.mktemp("host")
    (root / "sentinel").mkdir()
    (root / "sentinel" / "sentinel.txt").write_text(SENTINEL_TEXT)
    (root / "home").mkdir()
    (root / "home" / ".netrc").write_text(NETRC_TEXT)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    sleeper = subprocess.Popen(["/bin/sleep", "611.5"])
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(root / "home")
    yield {"root": root, "listener": listener, "sleeper": sleeper}
    os.environ["HOME"] = old_home or "/root"
    sleeper.kill()
    sleeper.wait()
    listener.close()


def _leftover_processes(uids: range) -> list[int]:
    """Host pids of live processes carrying MARKER or running as one of the sandbox's uids."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = int(status.split("Uid:")[1].split()[0])
        zombie = "\nState:\tZ" in status
        if not zombie and (MARKER.encode() in cmdline or uid in uids):
            found.append(int(pid))
    return found


@pytest.fixture(scope="module")
def contained(host, secret_env, sandbox):
    """check(program, spec_key, allowed, repeat): run a hostile program and assert it was contained."""
    subst = {
        "sentinel": host["root"] / "sentinel" / "sentinel.txt",
        "sentinel_dir": host["root"] / "sentinel",
        "repo": REPO,
        "home": host["root"] / "home",
        "port": host["listener"].getsockname()[1],
        "marker": MARKER,
        "secrets": repr(sorted(secret_env.values()) + [NETRC_TEXT, SENTINEL_TEXT]),
    }
    uids = range(sandbox.uid_base, sandbox.uid_base + sandbox.workers) if os.geteuid() == 0 else range(0)

    def check(program: str, spec_key: str = "pwned", allowed=NOT_PASSED, repeat: int = 1) -> None:
        program = string.Template(program).substitute(subst)
        for _ in range(repeat):
            result = sandbox.run(program, HOSTILE_SPECS[spec_key])
            verdicts = {r.verdict for r in result.results}
            assert P not in verdicts, f"passed: {result}"
            assert verdicts <= allowed, str(result)
        for good, key in CORRECT:  # the pool keeps serving, every kind
            assert sandbox.run(good, HOSTILE_SPECS[key]).pass_rate == 1.0
        assert subst["sentinel"].read_text() == SENTINEL_TEXT  # nothing outside changed
        assert (REPO / "pyproject.toml").exists()
        for place in (REPO, subst["home"], Path("/root"), Path("/usr"), Path("/")):
            assert not (place / "PWNED_BY_SANDBOX").exists()
        assert _leftover_processes(uids) == []  # nothing outlived its test
        assert host["sleeper"].poll() is None  # host processes alive
        with pytest.raises(BlockingIOError):  # the host's loopback listener saw nobody
            host["listener"].accept()

    return check

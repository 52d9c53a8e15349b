"""A real sandbox for the data tests: bwrap isolation where bwrap works, else rlimit."""

import shutil
import subprocess

import pytest


def _isolation() -> str:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "rlimit"
    probe = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True)
    return "bwrap" if probe.returncode == 0 else "rlimit"


@pytest.fixture(scope="session")
def sandbox():
    from crlab.rewards.sandbox import Sandbox

    with Sandbox(workers=2, isolation=_isolation()) as sb:
        yield sb

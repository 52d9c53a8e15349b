"""A real sandbox for the evaluation tests (bwrap; skipped where bwrap is missing, as the sandbox tests)."""

import shutil

import pytest


@pytest.fixture(scope="module")
def sandbox():
    from crlab.rewards.sandbox import Sandbox

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH; install it: apt-get install bubblewrap")
    with Sandbox(workers=2) as sb:
        yield sb

"""A sandbox worker (one bwrap fork server) killed from the host in the middle of a batch (the OOM killer, an
operator) costs nothing but time: the program it was running is run again on a fresh worker, every program
of the batch gets the verdict it deserves, the worker is replaced, and the next batch is all right."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from crlab.rewards import Sandbox, TestSpec, Verdict


def _batch() -> tuple[list[tuple[str, TestSpec]], list[Verdict]]:
    """Eight programs of 0.4 s each: the even ones print what their test expects, the odd ones do not."""
    jobs, expected = [], []
    for i in range(8):
        program = f"import time\ntime.sleep(0.4)\nprint({i})"
        spec = TestSpec(kind="stdin", inputs=("",), outputs=(f"{i if i % 2 == 0 else -1}\n",))
        jobs.append((program, spec))
        expected.append(Verdict.PASSED if i % 2 == 0 else Verdict.WRONG_ANSWER)
    return jobs, expected


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not on PATH")
def test_a_worker_killed_mid_batch_costs_no_verdict() -> None:
    jobs, expected = _batch()
    with Sandbox(workers=2, time_limit_s=2.0, memory_mb=512) as sandbox:
        victim = sandbox._pool[0]
        old_pid = victim.proc.pid
        out: dict[str, list] = {}
        thread = threading.Thread(target=lambda: out.setdefault("results", sandbox.run_many(jobs)))
        thread.start()
        time.sleep(0.2)  # both workers are in their first program
        victim.proc.kill()
        thread.join(60)
        assert not thread.is_alive(), "the batch never finished"
        verdicts = [r.results[0].verdict for r in out["results"]]
        assert verdicts == expected  # the killed worker's program was run again, on its replacement
        again = [r.results[0].verdict for r in sandbox.run_many(jobs)]
        assert again == expected
        assert len(sandbox._pool) == 2 and victim.proc.pid != old_pid  # replaced, in place

"""Exactly-once sweep cells: claim decisions, and concurrent claimers on both backends."""

from __future__ import annotations

import multiprocessing as mp
from datetime import timedelta

import pytest

from crlab.registry import Registry
from crlab.registry.claims import claim_cell
from crlab.registry.store import utcnow


def _new(run_id: str) -> dict:
    return {"id": run_id, "name": "cell", "config": {}, "run_dir": f"/runs/{run_id}"}


@pytest.fixture
def reg(db_url: str):
    with Registry(db_url) as registry:
        yield registry


def _claim(reg: Registry, sweep: str, key: str, run_id: str, retries: int = 2):  # noqa: ANN202
    return claim_cell(reg, sweep, key, _new(run_id), grace_s=60, max_retries=retries, owner={"pid": 1})


def test_claim_decisions(reg: Registry) -> None:
    sweep = reg.create_sweep("s", {}).id
    first = _claim(reg, sweep, "k", "r1")
    assert (first.action, first.run.id, first.run.status) == ("start", "r1", "running")  # new cell: start it
    assert first.run.attempt == 1  # the attempt is counted by the claim, before anything can fail
    assert _claim(reg, sweep, "k", "r2").action == "running"  # fresh heartbeat: someone else runs it
    reg.update_run("r1", heartbeat_at=utcnow() - timedelta(seconds=120))
    # a claimer that has not watched the registry healthy for a grace period does not believe an old
    # heartbeat (it may be old only because the registry was away)
    assert _claim(reg, sweep, "k", "r3").action == "running"
    reg.reach.healthy_since -= 61  # now it has
    stale = _claim(reg, sweep, "k", "r3")
    assert (stale.action, stale.run.id, stale.run.attempt) == ("resume", "r1", 2)  # stale: taken over
    reg.finish_run("r1", "preempted")
    assert _claim(reg, sweep, "k", "r4").action == "resume"  # preempted: resume from its checkpoint
    reg.finish_run("r1", "completed")
    assert _claim(reg, sweep, "k", "r5").action == "completed"  # done: skip
    assert [r.id for r in reg.list_runs(sweep_id=sweep)] == ["r1"]  # one row per cell, whatever happened


def test_a_dead_process_on_this_host_is_taken_over_at_once(reg: Registry) -> None:
    import socket
    import subprocess
    import sys

    sweep = reg.create_sweep("s", {}).id
    assert _claim(reg, sweep, "k", "r1").action == "start"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(done.stdout)  # a process of this host that has exited
    reg.start_attempt("r1", host=socket.gethostname(), pid=dead_pid)  # heartbeat fresh, process gone
    assert _claim(reg, sweep, "k", "r2").action == "resume"
    reg.start_attempt("r1", host=socket.gethostname(), pid=1)  # a live process of this host: leave it
    assert _claim(reg, sweep, "k", "r3").action == "running"
    reg.start_attempt("r1", host="another-host", pid=dead_pid)  # elsewhere only the heartbeat tells
    assert _claim(reg, sweep, "k", "r4").action == "running"


def test_an_old_heartbeat_elsewhere_is_believed_only_after_watching_a_whole_grace_period(
    reg: Registry,
) -> None:
    """After an outage no heartbeat got through: a run elsewhere (its process cannot be checked) is taken
    over only by a claimer that has since seen the registry healthy for a whole grace period."""
    from sqlalchemy.exc import OperationalError

    sweep = reg.create_sweep("s", {}).id
    assert _claim(reg, sweep, "k", "r1").action == "start"
    reg.start_attempt("r1", host="another-host", pid=123)
    reg.update_run("r1", heartbeat_at=utcnow() - timedelta(seconds=120))
    reg.reach.healthy_since -= 600  # watched for long before the outage
    assert _claim(reg, sweep, "k", "r2").action == "resume"  # stale, and watched: dead
    reg.update_run("r1", status="running", heartbeat_at=utcnow() - timedelta(seconds=120))

    def refused() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    with pytest.raises(OperationalError):
        reg.reach.call(refused)  # an outage (this registry does not retry: retry_s 0)
    assert reg.reach.healthy_for() == 0.0
    assert _claim(reg, sweep, "k", "r3").action == "running"  # back, but not watched a grace period yet
    reg.reach.healthy_since -= 61
    assert _claim(reg, sweep, "k", "r4").action == "resume"


def test_failed_cells_are_retried_then_left_failed(reg: Registry) -> None:
    sweep = reg.create_sweep("s", {}).id
    assert _claim(reg, sweep, "k", "r1", retries=1).action == "start"  # attempt 1
    reg.finish_run("r1", "failed", error="boom")
    assert _claim(reg, sweep, "k", "x", retries=1).action == "resume"  # the one retry: attempt 2
    reg.finish_run("r1", "failed", error="boom again")
    assert _claim(reg, sweep, "k", "x", retries=1).action == "gave_up"  # retries used up: left failed
    run = reg.get_run("r1")
    assert (run.status, run.error, run.attempt) == ("failed", "boom again", 2)


def test_a_cell_that_dies_before_it_starts_still_uses_up_its_attempts(reg: Registry) -> None:
    """A cell whose process fails before training starts (no start call at all) counts its attempts."""
    sweep = reg.create_sweep("s", {}).id
    actions = []
    for _ in range(5):
        claim = _claim(reg, sweep, "k", "r1", retries=2)
        actions.append(claim.action)
        if claim.mine:
            reg.finish_run("r1", "failed", error="SandboxError: bwrap is missing")
    assert actions == ["start", "resume", "resume", "gave_up", "gave_up"]
    assert reg.get_run("r1").attempt == 3  # max_retries + 1


def _claimer(url: str, sweep: str, keys: list[str], worker: int, out) -> None:  # noqa: ANN001
    with Registry(url) as reg:
        won = [
            k
            for k in keys
            if claim_cell(reg, sweep, k, _new(f"w{worker}-{k}"), grace_s=600, max_retries=0).mine
        ]
    out.put((worker, won))


def test_concurrent_claimers_never_share_a_cell(db_url: str) -> None:
    with Registry(db_url) as reg:
        sweep = reg.create_sweep("s", {}).id
    keys = [f"cell{i}" for i in range(12)]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(db_url, sweep, keys, w, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    won = [k for _, keys_won in results for k in keys_won]
    assert sorted(won) == sorted(keys)  # every cell claimed exactly once across the 4 processes
    with Registry(db_url) as reg:
        assert len(reg.list_runs(sweep_id=sweep)) == len(keys)


def test_a_live_run_whose_sweep_is_gone_is_adopted_without_an_attempt(reg: Registry) -> None:
    """Issue 22: the claimer of a live cell whose sweep process died adopts it (and becomes its watcher);
    a second claimer then finds it watched. An adopted run whose process dies is settled by its follower."""
    import os
    import socket
    import subprocess
    import sys

    from crlab.sweeps.watch import Watched

    here = socket.gethostname()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    sweep = reg.create_sweep("s", {}).id
    start = claim_cell(
        reg, sweep, "k", _new("r1"), grace_s=60, max_retries=0, owner={"host": here, "pid": int(gone.stdout)}
    )
    assert start.action == "start"
    with subprocess.Popen(["sleep", "60"]) as trainer:  # the cell's process, alive; its sweep is gone
        reg.update_run("r1", host=here, pid=trainer.pid)
        me = {"host": here, "pid": os.getpid()}
        adopt = claim_cell(reg, sweep, "k", _new("x"), grace_s=60, max_retries=0, owner=me)
        assert (adopt.action, adopt.run.attempt, adopt.mine) == ("adopt", 1, False)  # no attempt spent
        assert _claim(reg, sweep, "k", "x").action == "running"  # now this process watches it
        watched = Watched(reg, adopt.run, grace_s=60, adopted=True)
        assert watched.poll() is None  # training
        trainer.kill()
        trainer.wait()
        waiting = Watched(reg, adopt.run, grace_s=60, adopted=False)
        assert (
            waiting.poll() is None
        )  # its watcher (this process) lives: the watcher settles it, not a waiter
        assert watched.poll() == 0
    run = reg.get_run("r1")
    assert (run.status, run.attempt) == ("failed", 1)
    assert run.error == f"its process (pid {trainer.pid} on {here}) ended without saying how"


def test_an_exited_process_not_yet_reaped_counts_as_dead() -> None:
    import socket
    import subprocess
    import time
    from pathlib import Path

    from crlab.registry.lifecycle import process_state

    child = subprocess.Popen(["true"])  # not waited for: a zombie once it exits
    deadline = time.monotonic() + 30
    while "Z" not in Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2][:3]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process_state(socket.gethostname(), child.pid) is False
    child.wait()

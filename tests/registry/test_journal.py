"""A run's journal: replayed any number of times, each record lands once; the background writer rides out a
registry that is locked or away, and what it could not send is sent by the next one to open the registry."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from crlab.registry import Registry
from crlab.registry import db as regdb
from crlab.registry.journal import Journal, apply_records, read_records, replay, unsent
from crlab.registry.writer import RunRecorder


def _run(reg: Registry, tmp_path: Path, run_id: str = "r1", attempt: int = 1):  # noqa: ANN202
    return reg.create_run(
        "journaled", {}, run_id=run_id, status="running", attempt=attempt, run_dir=str(tmp_path / run_id)
    )


def _write(run_dir: str, attempt: int, steps: range) -> Journal:
    journal = Journal(run_dir, attempt)
    for step in steps:
        journal.append("metrics", step=step, values={"reward/rl_mean": step / 10, "actor/loss": -step})
    return journal


def test_a_journal_replayed_again_and_again_lands_exactly_once(db_url: str, tmp_path: Path) -> None:
    with Registry(db_url) as reg:
        run = _run(reg, tmp_path)
        journal = _write(run.run_dir, 1, range(1, 6))
        journal.append("checkpoint", step=5, path="/ck/5", kept=["/ck/5"], best=5)
        journal.append("event", event="checkpoint", payload={"path": "/ck/5"}, step=5)
        journal.append("status", status="completed", error=None)
        journal.close()
        records = list(read_records(journal.path))
        assert apply_records(reg.engine, run.id, records[:3]) == 3  # a writer that got part of it through
        assert replay(reg.engine, run.id, run.run_dir) == 5  # the rest, once
        assert (
            replay(reg.engine, run.id, run.run_dir) == 0 and apply_records(reg.engine, run.id, records) == 0
        )
        assert [m.step for m in reg.metrics(run.id, keys=["reward/rl_mean"])] == [1, 2, 3, 4, 5]
        assert [e.kind for e in reg.events(run.id)] == ["checkpoint"]
        (ck,) = reg.checkpoints(run.id)
        assert (ck.step, ck.best) == (5, True)
        done = reg.get_run(run.id)
        assert (done.status, done.journal_seq, unsent(done.run_dir, done.journal_seq)) == ("completed", 8, 0)
        assert reg.summaries(run.id)[1].n == 5  # the summary counts each step once too


def test_a_resumed_attempt_replaces_the_steps_after_its_checkpoint(db_url: str, tmp_path: Path) -> None:
    """Attempt 1 journaled steps 1-5 and died; attempt 2 resumed from the checkpoint of step 3 and logged
    4-6 again. A late replay of attempt 1's ending does not overwrite attempt 2's status."""
    with Registry(db_url) as reg:
        run = _run(reg, tmp_path)
        _write(run.run_dir, 1, range(1, 6)).close()
        replay(reg.engine, run.id, run.run_dir)
        reg.start_attempt(run.id)  # attempt 2
        second = _write(run.run_dir, 2, range(4, 7))
        second.close()
        replay(reg.engine, run.id, run.run_dir)
        values = {m.step: m.value for m in reg.metrics(run.id, keys=["actor/loss"])}
        assert values == {1: -1, 2: -2, 3: -3, 4: -4, 5: -5, 6: -6}
        assert len(reg.metrics(run.id, keys=["actor/loss"])) == 6
        stale = Journal(run.run_dir, attempt=1)  # attempt 1's ending, journaled late
        stale.append("status", status="failed", error="old")
        stale.close()
        replay(reg.engine, run.id, run.run_dir)
        assert reg.get_run(run.id).status == "running"


def test_a_line_cut_short_by_a_kill_is_skipped_and_numbering_goes_on(tmp_path: Path) -> None:
    journal = _write(str(tmp_path), 1, range(1, 3))
    journal.close()
    with journal.path.open("a") as f:
        f.write('{"seq": 3, "kind": "metr')  # the process died mid-line
    again = Journal(str(tmp_path), 2)
    again.append("status", status="completed", error=None)
    again.close()
    assert [(r["seq"], r["kind"]) for r in read_records(again.path)] == [
        (1, "metrics"),
        (2, "metrics"),
        (3, "status"),
    ]


@pytest.mark.serial  # a wall-time bound: no record waits 0.1 s
def test_the_writer_rides_out_a_sqlite_file_locked_by_another_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the registry's write lock for longer than the busy timeout: the run's records
    never wait (each call returns at once), the outage is said once, and all land once when it is free."""
    monkeypatch.setattr(regdb, "SQLITE_BUSY_TIMEOUT_S", 0.5)
    path = tmp_path / "reg.db"
    reg = Registry(f"sqlite:///{path}")
    run = _run(reg, tmp_path)
    said: list[str] = []
    recorder = RunRecorder(reg.engine, run.id, run.run_dir, run.attempt, say=said.append)
    locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # another writer, holding the lock
    slowest = 0.0
    for step in range(1, 21):
        started = time.monotonic()
        recorder.metrics(step, {"reward/rl_mean": float(step)})
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.2)  # a training step
    assert recorder.writer.backlog() > 0 and said and "registry unreachable (database is locked)" in said[0]
    threading.Timer(0.5, lambda: (locker.execute("COMMIT"), locker.close())).start()
    recorder.status("completed", None)
    assert recorder.close(flush_s=30) == 0
    assert slowest < 0.1, f"a record waited {slowest:.2f} s on the registry"
    assert len(said) == 2 and said[1].startswith("registry reachable again")
    assert [m.step for m in reg.metrics(run.id)] == list(range(1, 21))
    assert reg.get_run(run.id).status == "completed"
    reg.close()


def test_what_a_run_could_not_send_is_sent_by_the_next_command_that_opens_the_registry(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    with Registry(url) as reg:
        run = _run(reg, tmp_path)
    journal = _write(run.run_dir, 1, range(1, 4))
    journal.append("status", status="completed", error=None)  # the run ended during an outage: never sent
    journal.close()
    with Registry(url, replay_journals=False) as reg:
        pending = reg.get_run(run.id)
        assert (pending.status, unsent(pending.run_dir, pending.journal_seq)) == ("running", 4)
    with Registry(url) as reg:  # any command
        done = reg.get_run(run.id)
        assert (done.status, done.journal_seq, len(reg.metrics(run.id))) == ("completed", 4, 6)


def test_runs_sync_sends_a_journal_and_runs_show_says_what_is_unsent(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from rich.console import Console

    from crlab.cli_views import run_panel

    url = f"sqlite:///{tmp_path / 'reg.db'}"
    with Registry(url) as reg:
        run = _run(reg, tmp_path)
    journal = _write(run.run_dir, 1, range(1, 4))
    journal.append("status", status="completed", error=None)
    journal.close()
    with Registry(url, replay_journals=False) as reg:
        console = Console(record=True, width=200)
        console.print(run_panel(reg.get_run(run.id), {}, [], []))
        assert f"4 in its journal: `platform runs sync {run.id}`" in console.export_text()
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", "runs", "sync", run.id, "--json"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "CRLAB_DB_URL": url}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {run.id: {"sent": 4, "unsent": 0}}
    with Registry(url, replay_journals=False) as reg:
        assert reg.get_run(run.id).status == "completed"

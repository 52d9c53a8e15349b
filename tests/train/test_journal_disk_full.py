"""A disk that fills between checkpoints, under the run's journal: one line naming the journal and the fix,
and the registry still learns how the run ended (the status goes to it without the journal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlab.errors import DiskFull
from crlab.registry import Registry
from crlab.registry.writer import RunRecorder


def test_a_full_disk_under_the_journal_is_one_line_and_the_status_still_lands(
    small_disk, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'reg.db'}"  # the registry is elsewhere, with room
    reg = Registry(url)
    run = reg.create_run(
        "full", {}, run_id="r1", status="running", attempt=1, run_dir=str(small_disk.path / "r1")
    )
    recorder = RunRecorder(reg.engine, run.id, run.run_dir, run.attempt, say=lambda _m: None)
    recorder.metrics(1, {"reward/rl_mean": 0.5})
    small_disk.fill(leave=0)
    values = {f"metric/{i}": float(i) for i in range(200)}
    with pytest.raises(DiskFull) as raised:
        for step in range(2, 10_000):  # until the journal's last page is full too
            recorder.metrics(step, values)
    message = str(raised.value)
    assert (
        "\n" not in message and "no space left for the journal" in message and "platform resume r1" in message
    )
    recorder.status("failed", f"DiskFull: {message}")
    assert recorder.close(flush_s=30) == 0
    done = reg.get_run(run.id)
    assert (done.status, done.error) == ("failed", f"DiskFull: {message}")
    assert reg.metrics(run.id, keys=["reward/rl_mean"])[0].step == 1
    reg.close()

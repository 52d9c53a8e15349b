"""The local executor: parallelism, one GPU per cell where GPUs are visible, and its settings' errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from crlab.errors import ConfigError
from crlab.registry.entities import Run
from crlab.sweeps.executors import ExecutorConfig, LocalExecutor


def _run(tmp_path: Path, run_id: str) -> Run:
    return Run(id=run_id, name="x", sweep_id=None, cell_key=None, status="running", attempt=0, config={},
               run_dir=str(tmp_path / run_id))  # fmt: skip


def test_parallel_auto_is_one_cell_per_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert LocalExecutor(ExecutorConfig(parallel="auto")).parallel == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert LocalExecutor(ExecutorConfig(parallel="auto")).parallel == 1  # no GPU: one cell at a time


def test_each_running_cell_holds_its_own_gpu_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.setenv("CRLAB_HOME", str(tmp_path))
    executor = LocalExecutor(ExecutorConfig(parallel=2))
    # runs that do not exist: each cell process exits at once (code 2), which is all this test needs
    first = executor.launch(_run(tmp_path, "nope1"), f"sqlite:///{tmp_path / 'reg.db'}")
    second = executor.launch(_run(tmp_path, "nope2"), f"sqlite:///{tmp_path / 'reg.db'}")
    assert (first.gpus, second.gpus) == (["2"], ["5"]) and executor._free == []
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() == 2 and executor._free == ["2"]  # its GPU goes back to the pool
    assert "no run with id 'nope1'" in (tmp_path / "nope1" / "train.log").read_text()
    while second.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert sorted(executor._free) == ["2", "5"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "local", "parallel": 0}, "positive integer or 'auto'"),  # no cell could ever run
        ({"kind": "kubernetes"}, "unknown executor kind"),  # not an executor crlab has
        ({"max_retries": -1}, "integer >= 0"),
        ({"max_retries": 1.5}, "integer >= 0"),
        ({"heartbeat_grace_s": 0}, "must be > 0 seconds"),
        ({"slurm": [1]}, "must map submitit parameters"),
        ({"retries": 3}, "unknown executor key 'retries'"),
    ],
)
def test_bad_executor_settings(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig.from_mapping(settings)

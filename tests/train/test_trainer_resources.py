"""The trainer owns its sandbox's lifetime: a set-up that fails once the sandbox's workers have started
leaves none of them running (they are this process's children, read from /proc)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.errors import ConfigError
from crlab.registry import Registry
from crlab.train.loop import setup
from crlab.train.loop.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    """The live (not zombie) processes whose parent is ``pid``, and theirs."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_a_set_up_failing_after_the_sandbox_started_leaves_no_worker(
    tiny_cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRLAB_CACHE", tiny_cache)
    # every prompt is over 2 tokens: filtering fails in set-up, after the sandbox has started
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [
        "data.rl_source=tiny:4", "data.crl_ratio=0", "reward.sandbox_workers=2", "data.overlong_prompts=filter",
        "data.max_prompt_length=2", f"paths.runs_dir={tmp_path / 'runs'}",
    ])  # fmt: skip
    before = _children(os.getpid())
    running: list[set[int]] = []
    real_filter = setup.filter_overlong

    def filter_seeing_the_workers(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        running.append(_children(os.getpid()) - before)  # the sandbox's workers, as the failing step starts
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(setup, "filter_overlong", filter_seeing_the_workers)
    with pytest.raises(ConfigError, match="every RL prompt is over 2 tokens"):
        Trainer(cfg, Registry(f"sqlite:///{tmp_path / 'reg.db'}"), run=None)
    assert len(running) == 1 and len(running[0]) >= 2  # two workers were running when set-up failed
    deadline = time.monotonic() + 10
    while running[0] & _children(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running[0] & _children(os.getpid()) == set()  # none of them is left

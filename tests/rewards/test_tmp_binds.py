"""A folder the sandbox binds read-only from under /tmp (numpy from an environment in a clone there) is seen
inside it: the sandbox's private /tmp is mounted first and the binds on top of it, not hidden by it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import crlab.rewards.sandbox as sandbox_module
from crlab.rewards._worker import numpy_binds
from crlab.rewards.spec import TestSpec

PROGRAM = "import numpy as np\nprint(int(np.array(input().split(), dtype=int).sum()))"


def test_numpy_bound_from_under_tmp_is_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folders, _ = numpy_binds()
    assert folders and str(tmp_path).startswith("/tmp/")  # pytest's folders live under /tmp
    site = tmp_path / "site-packages"
    for folder in map(Path, folders):  # numpy and numpy.libs, copied under /tmp
        shutil.copytree(folder, site / folder.name)
    moved = [str(site / Path(f).name) for f in folders]
    monkeypatch.setattr(sandbox_module, "numpy_binds", lambda: (moved, [str(site)]))
    spec = TestSpec(kind="stdin", inputs=("1 2 3\n",), outputs=("6\n",), problem_id="p")
    with sandbox_module.Sandbox(workers=1, time_limit_s=10, harness="lcb") as box:
        (result,) = box.run(PROGRAM, spec).results
    assert result.verdict.value == "passed", result

"""Fixtures of the training tests: ``env``, the environment of a `platform` subprocess on the tiny coder
(its own registry, W&B offline); ``small_disk``, a small disk of a chosen size, a tmpfs mounted for the
test (root only; skipped where mount is refused)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class SmallDisk:
    """A tmpfs at ``path``; ``resize`` changes its size in place (it cannot shrink below what it holds)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resize(self, size: int) -> None:
        _mount(["-o", f"remount,size={size}", str(self.path)])

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def used(self) -> int:
        usage = shutil.disk_usage(self.path)
        return usage.total - usage.free

    def fill(self, leave: int) -> None:
        """Write a file that leaves ``leave`` bytes free, as another program filling the disk would."""
        with open(self.path / "filler", "ab") as handle:
            handle.write(b"\0" * (self.free() - leave))


def _mount(args: list[str]) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """An empty 64 MiB tmpfs; resize it to what the test needs. Unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    try:
        _mount(["-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)])
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root, or CAP_SYS_ADMIN): {detail}")
    try:
        yield SmallDisk(path)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # still busy: detach it


@pytest.fixture
def env(tiny_cache: str, tmp_path: Path, child_env: dict[str, str]) -> dict[str, str]:
    out = dict(child_env)
    out.update(
        CRLAB_CACHE=tiny_cache, CRLAB_DB_URL=f"sqlite:///{tmp_path / 'reg.db'}", WANDB_MODE="offline",
        TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions")),
    )  # fmt: skip
    return out

"""What produced a run: the git commit (and whether the tree was dirty) and the versions of key packages."""

from __future__ import annotations

import platform as _stdlib_platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "crlab",
    "torch",
    "transformers",
    "deepspeed",
    "vllm",
    "wandb",
    "optuna",
    "sqlalchemy",
    "omegaconf",
)


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository holding ``path`` (default: this package's source); (None, None) outside git."""
    where = Path(path) if path else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def package_versions() -> dict[str, str]:
    versions = {"python": _stdlib_platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions

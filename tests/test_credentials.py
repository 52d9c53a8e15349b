"""No credential leaves the process that needs it: a password given in ``registry_url`` is in none of the
run's ``config.yaml``, the registry, the journal, the W&B files or the command's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.train.test_loop import SMALL

from crlab.config import load_config, to_dict, to_yaml
from crlab.redact import redact_url

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cret-pw-7781"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:pw@db:5432/crlab", "postgresql://bob:***@db:5432/crlab"),
        ("postgresql+psycopg://bob:p@ss@db/crlab", "postgresql+psycopg://bob:***@db/crlab"),  # '@' in it
        ("postgresql://bob@db/crlab", "postgresql://bob@db/crlab"),  # no password
        ("sqlite:////tmp/registry.db", "sqlite:////tmp/registry.db"),
        (None, None),
    ],
)
def test_redact_url(url: str | None, shown: str | None) -> None:
    assert redact_url(url) == shown


def test_stored_copies_of_a_config_hide_the_password_and_the_config_keeps_it() -> None:
    cfg = load_config(overrides=[f"registry_url=postgresql://bob:{SECRET}@db/crlab"])
    assert cfg.registry_url == f"postgresql://bob:{SECRET}@db/crlab"  # what opens the registry
    assert SECRET not in to_yaml(cfg) and SECRET not in str(to_dict(cfg))
    assert to_dict(cfg)["registry_url"] == "postgresql://bob:***@db/crlab"


@pytest.mark.slow
def test_a_run_with_a_password_in_registry_url_writes_it_nowhere(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}",
           "WANDB_MODE": "offline"}  # fmt: skip
    args = [
        sys.executable, "-m", "crlab", "run", str(REPO / "experiments/tiny_coder.yaml"), *SMALL,
        "grpo.max_steps=1", "eval.source=null", f"paths.runs_dir={tmp_path / 'runs'}",
        f"registry_url=postgresql://bob:{SECRET}@127.0.0.1:9/crlab",  # CRLAB_DB_URL wins: never opened
    ]  # fmt: skip
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert SECRET not in res.stdout + res.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.suffix == ".wandb" for p in files)
    assert "postgresql://bob:***@127.0.0.1:9/crlab" in next(p for p in files if p.name == "config.yaml").read_text()
    leaked = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert leaked == []

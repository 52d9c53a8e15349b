"""`import platform` must stay the standard library's module, from the repository root and elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = "import platform, crlab; platform.system(); print(platform.__file__, crlab.__file__)"


@pytest.mark.parametrize("cwd", [REPO, REPO / "platform", Path("/")])
def test_platform_is_the_standard_library(cwd: Path) -> None:
    res = subprocess.run([sys.executable, "-c", CHECK], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    stdlib_file, crlab_file = res.stdout.split()
    assert "site-packages" not in stdlib_file and not stdlib_file.startswith(str(REPO))
    assert crlab_file.startswith(str(REPO / "platform" / "crlab"))
    assert not (REPO / "platform" / "__init__.py").exists()


def test_libraries_that_import_platform_still_work() -> None:
    code = "import torch, sqlalchemy, wandb; import crlab.cli; print(torch.__version__)"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


HEAVY = ("torch", "transformers", "deepspeed", "vllm", "wandb")


@pytest.mark.parametrize(
    "args",
    [["--help"], ["runs", "list", "--json"], ["runs", "show", "nosuchrun"], ["runs", "compare", "a", "b"],
     ["ablation", "nosuchsweep"], ["db", "current"]],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_registry_commands_import_no_ml_library(args: list[str], tmp_path: Path) -> None:
    """The commands that read the registry answer without importing torch, transformers, deepspeed, vLLM or
    W&B (seconds of imports on a small machine): checked on the import graph, not by timing."""
    code = (
        "import sys\nfrom crlab.cli import main\nsys.argv = ['platform', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {"CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("LOADED")]
    assert line == "LOADED []", (line, res.stderr[-2000:])

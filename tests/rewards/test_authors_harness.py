"""`reward.harness: authors` gives the authors' training reward: the sandbox's ``authors`` harness against
verl's ``prime_code`` module itself (``compute_score(..., continuous=True)`` from the ``verl`` 0.9.1 wheel,
installed with ``--no-deps`` and loaded from its files without importing the rest of verl), on a corpus of
programs: right, wrong, float answers, blank lines, missing imports, exceptions, exits, time-outs, return
values, problems with more than 10 tests. verl's time limits (5 s, then 10 s per test) are scaled to 1 s and
2 s in both, so the time-outs cost seconds; the wheel's copy is the authors' vendored one but for the
second pass's limit (20 s there: `recipe: authors` sets it) and its module loader."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crlab.rewards import TestSpec
from crlab.rewards._prime import AUTHORS_PRELUDE
from crlab.rewards.code import FallbackRunner, score_code_responses
from crlab.rewards.sandbox import Sandbox

FAST, SLOW = 1, 2  # verl's 5 s and 10 s, scaled

ADD = TestSpec("stdin", ("1 2\n", "10 20\n", "5 5\n"), ("3\n", "30\n", "10\n"), problem_id="add")
LINES = TestSpec("stdin", ("2\n", "3\n"), ("1\n2\n", "1\n2\n3\n"), problem_id="lines")
THIRD = TestSpec("stdin", ("1\n", "2\n"), ("0.333333\n", "0.666667\n"), problem_id="third")
WORDS = TestSpec("stdin", ("1\n",), ("Yes 1\n",), problem_id="words")
MANY = TestSpec(
    "stdin", tuple(f"{i}\n" for i in range(12)), tuple(f"{2 * i}\n" for i in range(12)), problem_id="many"
)
LOOP = TestSpec("stdin", ("1\n", "2\n"), ("1\n", "2\n"), problem_id="loop")
SUM = TestSpec("functional", ("[[1, 2, 3]]", "[[4, 5]]"), ("6", "9"), fn_name="total", problem_id="sum")
PAIR = TestSpec("functional", ("[[3, 1, 2]]",), ("[1, 3]",), fn_name="span", problem_id="pair")
PAIRS = TestSpec("functional", ("[2]",), ("[[0, 1], [1, 2]]",), fn_name="pairs", problem_id="pairs")
INV = TestSpec("functional", ("[3]",), ("0.3333333333",), fn_name="inv", problem_id="inv")
KEYS = TestSpec("functional", ('[{"1": 2}]',), ('{"1": 3}',), fn_name="bump", problem_id="keys")

R2 = "a, b = map(int, input().split())\n"
CORPUS = [  # (spec, program): each probes a rule of theirs (the comment says which, and their reward)
    (ADD, R2 + "print(a + b)"),  # right (1)
    (ADD, R2 + "print(a - b)"),  # wrong (0)
    (ADD, R2 + "print(a + b if a < 5 else 0)"),  # right on 1 of 3 (1/3)
    (ADD, R2 + "print()\nprint(a + b)\nprint()"),  # blank lines around the answer (1)
    (ADD, R2 + "print(a + b, '  ')"),  # trailing spaces (1)
    (ADD, "print(sum(Counter(map(int, input().split())).elements()))"),  # prelude: Counter (1)
    (ADD, "print(gcd(0, 0) + sum(map(int, input().split())))"),  # prelude: math (1)
    (ADD, R2 + "print(a + b)\nexit()"),  # exit is None there: TypeError (0)
    (ADD, "import sys\n" + R2 + "print(a + b)\nsys.exit(2)"),  # SystemExit swallowed (1)
    (ADD, R2 + "raise ValueError(a)"),  # exception (0)
    (ADD, "print("),  # syntax error (0)
    (ADD, "x = bytes(3 << 30)\n" + R2 + "print(a + b + len(x) - (3 << 30))"),  # no memory cap (1)
    (ADD, "import numpy as np\nprint(int(np.array(input().split(), dtype=int).sum()))"),  # numpy (1)
    (ADD, "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))"),  # StringIO: no buffer (0)
    (ADD, "from sys import stdin\nprint(sum(map(int, stdin.readline().split())))"),  # patched readline (1)
    (ADD, R2 + "stdout.write(str(a + b))"),  # module-level stdout: not captured (0)
    (ADD, R2 + "import math\nprint(a + b)"),  # an import after code: indented into code() (1)
    (
        ADD,
        "def main():\n    " + R2.strip() + "\n    print(a + b)\nif __name__ == '__main__':\n    main()",
    ),  # (1)
    (ADD, 's = """x\ny"""\n' + R2 + "print(a + b + len(s) - 3)"),  # a tab into the string (0)
    (LINES, "n = int(input())\nfor i in range(1, n + 1):\n    print(i)"),  # (1)
    (LINES, "n = int(input())\nprint(*range(1, n + 1))"),  # one line, not two (0)
    (
        LINES,
        "n = int(input())\nfor i in range(1, n + 1):\n    print(i)\n    print()",
    ),  # blank lines dropped (1)
    (LINES, "n = int(input())\nfor i in range(1, n + 1):\n    print(f'{i}.0000001')"),  # allclose (1)
    (THIRD, "print(f'{int(input()) / 3:.6f}')"),  # (1)
    (THIRD, "print(int(input()) / 3)"),  # np.allclose: 0.3333333333333333 ~ 0.333333 (1)
    (THIRD, "print(f'{int(input()) / 3 + 1e-4:.6f}')"),  # outside allclose (0)
    (WORDS, "print('Yes', int(input()))"),  # (1)
    (WORDS, "print('Yes ', int(input()))"),  # 'Yes  1': no rule takes it (0)
    (WORDS, "print(' Yes 1 ')"),  # stripped (1)
    (MANY, "print(2 * int(input()))"),  # (1)
    (MANY, "n = int(input())\nprint(2 * n if n != 11 else 0)"),  # wrong on test 12: first 10 only (1)
    (MANY, "n = int(input())\nprint(2 * n if n != 3 else 0)"),  # wrong on test 4 (9/10)
    (LOOP, "n = int(input())\nwhile n == 2:\n    pass\nprint(n)"),  # a time-out on test 2 (1/2)
    (SUM, "def total(nums):\n    return sum(nums)"),  # (1)
    (SUM, "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)"),  # (1)
    (SUM, "def total(nums):\n    return float(sum(nums))"),  # 6.0 == 6 (1)
    (SUM, "import numpy as np\ndef total(nums):\n    return np.int64(sum(nums))"),  # not JSON: error (0)
    (SUM, "def total(nums):\n    return [sum(nums)]"),  # (0)
    (
        SUM,
        "def total(nums):\n    return sum(nums) if len(nums) == 3 else None",
    ),  # the second pass runs it as stdin (0)
    (SUM, "def total(nums):\n    return 0\nprint(6)"),  # ... and compares what it prints (1/2)
    (
        SUM,
        "def total(nums):\n    return -1\nprint(sum(json.loads(input())))",
    ),  # ... its input: one JSON a line (1)
    (SUM, "def total(nums):\n    exit()"),  # exit is None (0)
    (PAIR, "def span(nums):\n    return (min(nums), max(nums))"),  # top-level tuple (1)
    (PAIR, "def span(nums):\n    return {min(nums), max(nums)}"),  # a set: not JSON (0)
    (PAIRS, "def pairs(n):\n    return [(i, i + 1) for i in range(n)]"),  # tuples inside (0)
    (INV, "def inv(n):\n    return 1 / n"),  # no tolerance for return values (0)
    (INV, "def inv(n):\n    return round(1 / n, 10)"),  # (1)
    (KEYS, "def bump(d):\n    return {k: v + 1 for k, v in d.items()}"),  # int keys on both sides (1)
    (KEYS, "def bump(d):\n    return {str(k): v + 1 for k, v in d.items()}"),  # str keys vs int keys (0)
]


def _load_prime_code():
    """verl's ``utils/reward_score/prime_code`` package from the wheel's files, without importing ``verl``
    itself (its ``__init__`` pulls in the training stack). The wheel is unpacked beside the environment
    (``pip install --no-deps --target $VENV/verl-wheel verl==0.9.1``), not into it: it also ships top-level
    ``tests`` and ``scripts`` packages, and a ``tests`` package in site-packages hides this repository's
    from every process the tests spawn."""
    unpacked = Path(sys.prefix) / "verl-wheel" / "verl"
    spec = importlib.util.find_spec("verl") if not unpacked.is_dir() else None
    if spec is None and not unpacked.is_dir():
        pytest.fail("verl's wheel is not there: pip install --no-deps --target .venv/verl-wheel verl==0.9.1 "
                    "(README, Run the tests)")  # fmt: skip
    root = unpacked if unpacked.is_dir() else Path(spec.origin).parent
    folder = root / "utils" / "reward_score" / "prime_code"
    name = "verl_prime_code_under_test"
    module_spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    check = module.apps_check_correctness
    scale = {5: FAST, 10: SLOW, 20: SLOW}
    module.apps_check_correctness = lambda in_outs, generation, timeout, debug: check(
        in_outs=in_outs, generation=generation, timeout=scale[timeout], debug=debug
    )
    return module, (folder / "testing_util.py").read_text()


def _their_tests(spec: TestSpec) -> dict:
    """The test cases as the authors' data hands them to compute_score (functional inputs: one JSON
    value per line, as rStar-Coder and LiveCodeBench write them)."""
    if spec.kind == "stdin":
        return {"inputs": list(spec.inputs), "outputs": list(spec.outputs)}
    inputs = ["\n".join(json.dumps(a) for a in json.loads(text)) for text in spec.inputs]
    return {"inputs": inputs, "outputs": list(spec.outputs), "fn_name": spec.fn_name}


@pytest.fixture(scope="module")
def theirs() -> list[float]:
    module, _ = _load_prime_code()

    def score(case: tuple) -> float:
        spec, program = case
        return float(
            module.compute_score(f"```python\n{program}\n```", _their_tests(spec), continuous=True)[0]
        )

    with ThreadPoolExecutor(3) as pool:  # (each call runs its tests in processes of its own)
        return list(pool.map(score, CORPUS))


@pytest.fixture(scope="module")
def runner():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH; install it: apt-get install bubblewrap")
    with Sandbox(workers=2, time_limit_s=FAST, harness="authors", second_time_limit_s=SLOW) as sandbox:
        yield sandbox


def test_every_program_gets_the_authors_reward(runner, theirs) -> None:
    responses = [f"```python\n{p}\n```" for _, p in CORPUS]
    ours = score_code_responses(runner, responses, [s for s, _ in CORPUS], max_tests=10, mode="pass_rate")
    wrong = [
        f"{s.problem_id} {p!r}: theirs {t}, ours {o}"
        for (s, p), t, o in zip(CORPUS, theirs, ours, strict=True)
        if abs(t - o) > 1e-12
    ]
    assert not wrong, "\n".join(wrong)
    assert 0 < sum(t == 1.0 for t in theirs) < len(theirs) and any(0 < t < 1 for t in theirs)


def test_the_prelude_is_theirs() -> None:
    _, source = _load_prime_code()
    assert json.dumps(AUTHORS_PRELUDE) in source


@pytest.mark.slow
def test_the_strict_harness_differs_on_the_probes(theirs) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    with FallbackRunner(Sandbox(2, FAST), Sandbox(2, SLOW)) as strict:
        responses = [f"```python\n{p}\n```" for _, p in CORPUS]
        ours = score_code_responses(strict, responses, [s for s, _ in CORPUS], max_tests=10)
    assert sum(abs(t - o) > 1e-12 for t, o in zip(theirs, ours, strict=True)) >= 12  # (16 of 49 when written)


def test_recipe_authors_gives_the_run_the_authors_harness() -> None:
    """`recipe: authors` sets reward.harness: authors; the run's sandbox then makes prime_code's two
    passes itself, at reward.time_limit_s and reward.fallback_time_limit_s (5 s and 20 s)."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not on PATH")
    from crlab.config import load_config
    from crlab.train.loop.setup import make_sandbox

    assert load_config(None, []).reward.harness == "strict"
    sandbox = make_sandbox(load_config(None, ["recipe=authors", "reward.sandbox_workers=1"])).__enter__()
    try:
        assert isinstance(sandbox, Sandbox) and sandbox.harness == "authors"
        assert (sandbox.time_limit_s, sandbox.second_time_limit_s) == (5.0, 20.0)
        program = "print(sum(Counter(map(int, input().split())).elements()))"  # Counter: their prelude
        assert sandbox.run(program, ADD).pass_rate == 1.0
    finally:
        sandbox.__exit__(None, None, None)

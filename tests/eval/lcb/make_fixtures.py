"""Writes problems.jsonl (LiveCodeBench ``code_generation_lite`` rows) and samples.jsonl (LiveCodeBench's
output format: question_id, code_list) for test_lcb_scoring.py. Each sample probes one rule of LiveCodeBench's
evaluator; the comment says which and what LiveCodeBench does. Run it again after editing:
``python tests/eval/lcb/make_fixtures.py``."""

import base64
import json
import pickle
import zlib
from pathlib import Path

HERE = Path(__file__).parent


def tests(pairs, kind):
    return [{"input": i, "output": o, "testtype": kind} for i, o in pairs]


def row(qid, pairs, kind="stdin", func=None, private=(), starter="", compress=False):
    private_text = json.dumps(tests(private, kind))
    if compress:  # as LiveCodeBench publishes most private tests: base64(zlib(pickle(JSON text)))
        private_text = base64.b64encode(zlib.compress(pickle.dumps(private_text))).decode()
    return {
        "question_title": qid, "question_content": f"Problem {qid}.", "platform": "leetcode" if func else "atcoder",
        "question_id": qid, "contest_id": "fixture", "contest_date": "2024-11-02T00:00:00", "starter_code": starter,
        "difficulty": "easy", "public_test_cases": json.dumps(tests(pairs, kind)), "private_test_cases": private_text,
        "metadata": json.dumps({"func_name": func} if func else {}),
    }  # fmt: skip


PROBLEMS = [
    row("add", [("1 2\n", "3\n"), ("10 20\n", "30\n")], private=[("5 5\n", "10\n")], compress=True),
    row("lines", [("1 2\n", "1\n2\n"), ("7 8\n", "7\n8\n")]),
    row("third", [("1\n", "0.333333\n"), ("2\n", "0.666667\n")]),
    row("word", [("1\n", "Yes 1\n"), ("2\n", "Yes 2\n")]),
    row("yesno", [("1\n", "Yes\nNo\n")]),
    row("thousand", [("1000\n", "1000\n")]),
    row("big", [("5000\n", "1" + "0" * 5000 + "\n")]),
    row(
        "fsum",
        [("[1, 2, 3]", "6"), ("[4, 5]", "9")],
        "functional",
        "total",
        private=[("[10]", "10")],
        starter="class Solution:\n    def total(self, nums: List[int]) -> int:\n        ",
        compress=True,
    ),
    row("fpair", [("[3, 1, 2]", "[1, 3]")], "functional", "span"),
    row("fpairs", [("2", "[[0, 1], [1, 2]]")], "functional", "pairs"),
    row("fthird", [("3", "0.3333333333")], "functional", "inv"),
    row("fone", [("1", "1"), ("0", "0")], "functional", "same"),
    row("fmean", [("[1, 2, 3]", "2"), ("[4, 4]", "4")], "functional", "avg"),
    row("fcount", [('"a"', "1"), ('"b"', "1")], "functional", "first"),
]

READ2 = "a, b = map(int, input().split())\n"
S = {  # (problem, code): the rule it probes (LiveCodeBench's verdict)
    "add": [
        READ2 + "print(a + b)",  # ordinary (pass)
        READ2 + "print(a - b)",  # ordinary wrong answer at test 0
        READ2 + "print(a + b if a < 10 else 0)",  # wrong at test 1: test 2 is not run
        READ2 + "print(a + b, ' ')\nprint()\nprint()",  # trailing spaces and blank lines (pass)
        READ2 + "print(a + b)\nexit(1)",  # SystemExit(1) is swallowed (pass; strict: runtime error)
        READ2 + "print(a + b)\nsys.exit(3)",  # sys from the prelude; swallowed (pass)
        READ2 + "print(a + b)\nquit()",  # quit is None there: TypeError (runtime error; strict: pass)
        "print(sum(Counter(map(int, input().split())).elements()))",  # prelude Counter (pass)
        "x = deepcopy([1])\nprint(sum(map(int, input().split())) + x[0] - 1)",  # prelude deepcopy (pass)
        "print(int(mean(map(int, input().split())) * 2))",  # prelude statistics.mean (pass)
        "print(len(ascii_lowercase) - 26 + sum(map(int, input().split())))",  # prelude string (pass)
        "import numpy as np\nprint(int(np.array(input().split(), dtype=np.int64).sum()))",  # numpy (pass)
        "def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\n"
        + READ2
        + "print(a + b + f(5000) - 5000)",  # recursion 50000
        "x = bytes(3 << 30)\n" + READ2 + "print(a + b + len(x) - (3 << 30))",  # no memory cap (pass)
        "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))",  # StringIO has no buffer (error)
        "import sys\nprint(sum(map(int, sys.stdin.read().split())))",  # sys.stdin.read (pass)
        "import sys\ninput = sys.stdin.readline\n" + READ2 + "print(a + b)",  # readline alias (pass)
        "from sys import stdin\nprint(sum(map(int, stdin.readline().split())))",  # hoisted: patched (pass)
        "from sys import stdin\nprint(sum(int(x) for line in stdin for x in line.split()))",  # iterates the old stdin (WA)
        "print(sum(map(int, stdin.read().split())))",  # the prelude's stdin, read patched (pass)
        READ2 + "stdout.write(str(a + b) + '\\n')",  # the prelude's stdout is not captured (WA)
        "total = 0\ndef add(x):\n    global total\n    total += x\n"
        + READ2
        + "add(a + b)\nprint(total)",  # global in the wrapper (error)
        "class Solution:\n    pass\n" + READ2 + "print(a + b)",  # 'class Solution' in a stdin program (error)
        "def main():\n    "
        + READ2.strip()
        + "\n    print(a + b)\nif __name__ == '__main__':\n    main()",  # unwrapped (pass)
        "import sys\n" + READ2 + "print(a + b)\nsys.stdout.close()",  # close takes one argument (error)
        "import sys\n"
        + READ2
        + "print(a + b)\ntry:\n    sys.stdout.close()\nexcept TypeError:\n    pass",  # ... so the output stays (pass)
        "while True:\n    pass",  # timeout at test 0
        "try:\n    while True:\n        pass\nexcept:\n    print(3)",  # catches the timeout; the alarm's line printed (WA)
        "print(",  # syntax error
        READ2 + "print(a + b",  # syntax error after a valid line
        "import os\nprint(len(os.getcwd()))",  # os.getcwd is None there (error)
    ],
    "lines": [
        READ2 + "print(a)\nprint(b)",  # pass
        READ2 + "print(a, b, sep='\\x0c')",  # only '\n' splits lines (WA; strict: pass)
        READ2 + "print(' ', a, '\\r')\nprint(b, '\\t')",  # each line stripped (pass)
        READ2 + "print(a)\nprint()\nprint(b)",  # an inner blank line counts (WA)
    ],
    "third": [
        "n = int(input())\nprint(f'{n / 3:.6f}')",  # pass
        "n = int(input())\nprint(f'{n / 3:.7f}')",  # Decimal, no tolerance (WA; strict: pass)
        "n = int(input())\nprint(round(n / 3, 6))",  # pass
    ],
    "word": [
        "n = int(input())\nprint('Yes', n)",  # pass
        "n = int(input())\nprint('Yes ', n)",  # 'Yes  1': not a Decimal line (WA; strict: pass)
        "n = int(input())\nprint(' Yes', str(n) + ' ')",  # leading/trailing space stripped (pass)
    ],
    "yesno": [
        "print('Yes')\nprint('  No  ')",  # every line stripped, not only the text (pass)
        "print('Yes')\nprint('N o')",  # WA
    ],
    "thousand": [
        "print('1_000')",  # Decimal('1_000') == 1000 (pass; strict: WA)
        "print('1e3')",  # pass
        "print('1000.000')",  # pass
        "print('+1000')",  # pass
        "print('0x3e8')",  # not a Decimal (WA)
    ],
    "big": [
        "n = int(input())\nprint(10 ** n)",  # int-to-str digits 50000 (pass; strict: runtime error)
        "n = int(input())\nprint('1' + '0' * n)",  # pass
    ],
    "fsum": [
        "class Solution:\n    def total(self, nums: List[int]) -> int:\n        return sum(nums)",  # pass
        "class Solution:\n    def total(self, nums):\n        return float(sum(nums))",  # 6.0 == 6 (pass)
        "class Solution:\n    seen = []\n    def total(self, nums):\n        self.seen.append(1)\n        return sum(nums) * len(self.seen)",  # shared state (WA at test 1)
        "class Solution:\n    def __init__(self):\n        self.calls = 0\n    def total(self, nums):\n        self.calls += 1\n        return sum(nums) if self.calls == 1 else -1",  # ONE Solution() (WA at 1)
        "calls = []\nclass Solution:\n    def total(self, nums):\n        calls.append(0)\n        return sum(nums) + len(calls) - 1",  # module state kept (WA at 1)
        "class Solution:\n    def total(self, nums):\n        import numpy as np\n        return np.int64(sum(nums))",  # numpy scalar (pass)
        "class Solution:\n    def total(self, nums):\n        return sum(nums) if nums[0] < 10 else None",  # None at test 2 (WA)
        "class Solution:\n    def total(self, nums):\n        raise ValueError('x')",  # error
        "class Solution:\n    def total(self, nums):\n        exit()",  # SystemExit ends the process (fail)
        "class Solution:\n    def summe(self, nums):\n        return sum(nums)",  # no such method (error)
        "def total(nums):\n    return sum(nums)",  # a top-level function (pass)
        "class Solution:\n    def total(self, nums):\n        while True:\n            pass",  # timeout
        "class Solution:\n    def total(self, nums):\n        return sum(nums)\nclass Solution(",  # syntax error
    ],
    "fpair": [
        "def span(nums):\n    return (min(nums), max(nums))",  # a top-level tuple becomes a list (pass)
        "def span(nums):\n    return [min(nums), max(nums)]",  # pass
        "def span(nums):\n    return {min(nums), max(nums)}",  # a set is not a list (WA)
        "def span(nums):\n    return [min(nums), max(nums), 0][:2]",  # pass
    ],
    "fpairs": [
        "def pairs(n):\n    return [[i, i + 1] for i in range(n)]",  # pass
        "def pairs(n):\n    return [(i, i + 1) for i in range(n)]",  # nested tuples are not lists (WA; strict: pass)
        "def pairs(n):\n    return tuple([i, i + 1] for i in range(n))",  # top-level tuple (pass)
    ],
    "fthird": [
        "def inv(n):\n    return 1 / n",  # 0.3333333333333333 != 0.3333333333 (WA; strict: pass)
        "def inv(n):\n    return round(1 / n, 10)",  # pass
    ],
    "fone": [
        "def same(x):\n    return x",  # pass
        "def same(x):\n    return bool(x)",  # True == 1 (pass; strict: WA)
        "def same(x):\n    return str(x)",  # '1' != 1 (WA)
    ],
    "fmean": [
        "def avg(nums):\n    return mean(nums)",  # prelude statistics (pass; strict: runtime error)
        "def avg(nums):\n    return int(median(nums))",  # pass
        "def avg(nums):\n    return Fraction(sum(nums), len(nums))",  # Fraction is not in the prelude (error)
    ],
    "fcount": [
        "seen = Counter()\ndef first(s):\n    seen[s] += 1\n    return seen[s]",  # module runs once (pass)
        "import sys\nsys.setrecursionlimit(10)\ndef first(s):\n    return 1",  # pass
        "def first(s):\n    def f(k):\n        return 0 if k == 0 else 1 + f(k - 1)\n    return f(3000) - 2999",  # recursion 50000 (pass)
    ],
}


def main() -> None:
    (HERE / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    (HERE / "samples.jsonl").write_text(
        "".join(json.dumps({"question_id": q, "code_list": codes}) + "\n" for q, codes in S.items())
    )


if __name__ == "__main__":
    main()

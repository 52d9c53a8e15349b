"""The templates of the bundled tiny task: small stdin/stdout problems a ~1-5M-parameter model can learn.

Each :class:`Template` is a family of problems: a question with constants (``{c}``, ``{k}``, ...) filled
from ``grid``, a one-line canonical ``body`` printed after its family's input-reading ``HEADERS``, two or
three ``wrongs`` (off-by-one, wrong operator, missing edge case: some pass a subset of the tests), a
Python ``ref`` that computes the expected output, and ``edges``: inputs always tested first, chosen so
that every wrong candidate fails at least one test. Used only by :mod:`crlab.data.tiny`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# How each family reads its input: the first lines of every program of that family.
HEADERS = {
    "pair": "a, b = map(int, input().split())",
    "one": "n = int(input())",
    "list": "n = int(input())\na = list(map(int, input().split()))",
    "str": "s = input()",
}
LETTERS = "abcde"
PARITY_WORDS = tuple(
    {"yes": y, "no": n} for y, n in [("YES", "NO"), ("Yes", "No"), ("even", "odd"), ("E", "O")]
)
GREATER_WORDS = tuple({"yes": y, "no": n} for y, n in [("YES", "NO"), ("Yes", "No"), ("A", "B"), ("X", "Y")])


@dataclass(frozen=True)
class Template:
    name: str
    family: str
    question: str
    body: str
    wrongs: tuple[str, ...]
    ref: Callable[..., Any]
    grid: tuple[dict[str, Any], ...] = ({},)
    edges: Callable[[dict[str, Any]], list[tuple]] = field(default=lambda p: [])
    difficulty: str = "easy"


def render_input(family: str, args: tuple) -> str:
    """The stdin text for one test of ``family``."""
    if family == "pair":
        return f"{args[0]} {args[1]}\n"
    if family == "one":
        return f"{args[0]}\n"
    if family == "list":
        return f"{len(args[0])}\n{' '.join(map(str, args[0]))}\n"
    return f"{args[0]}\n"


def random_input(family: str, rng: random.Random) -> tuple:
    """One random test input of ``family`` (small numbers, short strings)."""
    if family == "pair":
        a = rng.randint(0, 20)
        return (a, a if rng.random() < 0.15 else rng.randint(0, 20))
    if family == "one":
        return (rng.randint(0, 30),)
    if family == "list":
        return ([rng.randint(0, 20) for _ in range(rng.randint(1, 6))],)
    return ("".join(rng.choice(LETTERS) for _ in range(rng.randint(1, 8))),)


def _cs(lo: int, hi: int, key: str = "c") -> tuple[dict[str, int], ...]:
    return tuple({key: v} for v in range(lo, hi + 1))


# Pair problems: the edges (1, 7) (a < b, a > 0) and (6, 6) (a == b) catch every wrong candidate below.
PAIR_EDGES: Callable[[dict[str, Any]], list[tuple]] = lambda p: [(1, 7), (6, 6)]  # noqa: E731

TEMPLATES: tuple[Template, ...] = (
    Template("add_c", "pair", "Read two integers a and b. Print a + b + {c}.", "print(a + b + {c})",
             ("print(a + b + {c} + 1)", "print(a * b + {c})", "print(a - b + {c})"),
             lambda p, a, b: a + b + p["c"], _cs(1, 60), PAIR_EDGES),
    Template("mul_add", "pair", "Read two integers a and b. Print a * b + {c}.", "print(a * b + {c})",
             ("print(a * b)", "print(a + b + {c})"),
             lambda p, a, b: a * b + p["c"], _cs(1, 40), PAIR_EDGES),
    Template("max_add", "pair", "Read two integers a and b. Print the larger one plus {c}.",
             "print(max(a, b) + {c})", ("print(min(a, b) + {c})", "print(a + {c})"),
             lambda p, a, b: max(a, b) + p["c"], _cs(0, 40), PAIR_EDGES),
    Template("min_mul", "pair", "Read two integers a and b. Print the smaller one times {k}.",
             "print(min(a, b) * {k})", ("print(max(a, b) * {k})", "print(b * {k})", "print(min(a, b) + {k})"),
             lambda p, a, b: min(a, b) * p["k"], _cs(2, 20, "k"), PAIR_EDGES),
    Template("absdiff", "pair", "Read two integers a and b. Print |a - b| times {k}.",
             "print(abs(a - b) * {k})", ("print((a - b) * {k})", "print(abs(a + b) * {k})"),
             lambda p, a, b: abs(a - b) * p["k"], _cs(1, 20, "k"), PAIR_EDGES),
    Template("greater", "pair", "Read two integers a and b. Print {yes} if a > b, otherwise {no}.",
             'print("{yes}" if a > b else "{no}")',
             ('print("{yes}" if a >= b else "{no}")', 'print("{yes}" if a < b else "{no}")'),
             lambda p, a, b: p["yes"] if a > b else p["no"], GREATER_WORDS,
             lambda p: [(1, 7), (6, 6), (9, 2)]),
    Template("kth_multiple", "one", "Read an integer n. Print the n-th positive multiple of {k}.",
             "print(n * {k})", ("print((n - 1) * {k})", "print(n + {k})"),
             lambda p, n: n * p["k"], _cs(2, 30, "k"), lambda p: [(1,), (5,)]),
    Template("mod", "one", "Read an integer n. Print n modulo {k}.", "print(n % {k})",
             ("print(n // {k})", "print((n + 1) % {k})"),
             lambda p, n: n % p["k"], _cs(2, 15, "k"), lambda p: [(2 * p["k"] + 1,)]),
    Template("range_sum", "one", "Read an integer n. Print the sum of the integers from {lo} to n.",
             "print(sum(range({lo}, n + 1)))", ("print(sum(range({lo}, n)))", "print(n * (n + 1) // 2)"),
             lambda p, n: sum(range(p["lo"], n + 1)), _cs(0, 9, "lo"), lambda p: [(p["lo"] + 4,)]),
    Template("parity", "one", "Read an integer n. Print {yes} if n is even, otherwise {no}.",
             'print("{yes}" if n % 2 == 0 else "{no}")',
             ('print("{yes}" if n % 2 == 1 else "{no}")', 'print("{yes}" if n % 4 == 0 else "{no}")'),
             lambda p, n: p["yes"] if n % 2 == 0 else p["no"], PARITY_WORDS,
             lambda p: [(6,), (3,)]),
    Template("divisible", "one", "Read an integer n. Print YES if n is divisible by {k}, otherwise NO.",
             'print("YES" if n % {k} == 0 else "NO")',
             ('print("YES" if n % {k} == 1 else "NO")', 'print("YES" if n > 0 and n % {k} == 0 else "NO")'),
             lambda p, n: "YES" if n % p["k"] == 0 else "NO", _cs(2, 15, "k"),
             lambda p: [(0,), (p["k"],), (p["k"] + 1,)]),
    Template("square_add", "one", "Read an integer n. Print n * n + {c}.", "print(n * n + {c})",
             ("print(n * 2 + {c})", "print(n * n)"),
             lambda p, n: n * n + p["c"], _cs(1, 40), lambda p: [(3,)]),
    Template("sum_greater", "list", "Read n, then n integers. Print the sum of those greater than {k}.",
             "print(sum(x for x in a if x > {k}))", ("print(sum(x for x in a if x >= {k}))", "print(sum(a))"),
             lambda p, xs: sum(x for x in xs if x > p["k"]), _cs(1, 15, "k"),
             lambda p: [([p["k"], p["k"] + 3, 0],)], "medium"),
    Template("max_add_list", "list", "Read n, then n integers. Print the largest one plus {c}.",
             "print(max(a) + {c})", ("print(a[-1] + {c})", "print(max(a[1:]) + {c})"),
             lambda p, xs: max(xs) + p["c"], _cs(0, 20), lambda p: [([9, 2, 5],), ([7],)], "medium"),
    Template("min_mul_list", "list", "Read n, then n integers. Print the smallest one times {k}.",
             "print(min(a) * {k})", ("print(a[0] * {k})", "print(max(a) * {k})"),
             lambda p, xs: min(xs) * p["k"], _cs(1, 15, "k"), lambda p: [([5, 1, 3],)], "medium"),
    Template("count_div", "list", "Read n, then n integers. Print how many are divisible by {k}.",
             "print(sum(1 for x in a if x % {k} == 0))",
             ("print(sum(1 for x in a if x % {k} != 0))", "print(sum(1 for x in a if x > 0 and x % {k} == 0))"),
             lambda p, xs: sum(1 for x in xs if x % p["k"] == 0), _cs(2, 9, "k"),
             lambda p: [([0, p["k"], p["k"] + 1],)], "medium"),
    Template("reverse", "str", "Read a string. Print it reversed.", "print(s[::-1])",
             ("print(s)", "print(s[1:][::-1])"), lambda p, s: s[::-1], edges=lambda p: [("abc",)]),
    Template("upper", "str", "Read a string. Print it in upper case.", "print(s.upper())",
             ("print(s)", "print(s[0].upper() + s[1:])"), lambda p, s: s.upper(), edges=lambda p: [("abc",)]),
    Template("count_char", "str", "Read a string. Print how many times the letter {ch} occurs in it.",
             'print(s.count("{ch}"))', ('print(s[1:].count("{ch}"))', 'print(s.count("{ch}") + 1)'),
             lambda p, s: s.count(p["ch"]), tuple({"ch": ch} for ch in LETTERS), lambda p: [(p["ch"] + "ab",)]),
    Template("repeat", "str", "Read a string. Print it {k} times with no spaces.", "print(s * {k})",
             ("print(s * ({k} - 1))", "print(s + s)"), lambda p, s: s * p["k"], _cs(2, 6, "k"),
             lambda p: [("ab",)]),
    Template("length_add", "str", "Read a string. Print its length plus {c}.", "print(len(s) + {c})",
             ("print(len(s) + {c} + 1)", "print(len(set(s)) + {c})"),
             lambda p, s: len(s) + p["c"], _cs(0, 30), lambda p: [("aab",)]),
    Template("first_last", "str", "Read a string. Print its first and last characters.",
             "print(s[0] + s[-1])", ("print(s[0] + s[1])", "print(s[-1] + s[0])"),
             lambda p, s: s[0] + s[-1], edges=lambda p: [("abc",), ("d",)]),
)  # fmt: skip

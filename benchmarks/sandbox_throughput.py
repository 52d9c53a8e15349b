"""Throughput of crlab's Sandbox against a one-interpreter-per-test baseline.

Builds a fixed corpus of programs (stdin and functional problems; correct, wrong, crashing and timing-out
variants), runs it through ``Sandbox`` (bwrap isolation, warm fork servers) and through a baseline that
starts a fresh ``python`` process per test case with the same rlimits, harness and verdict logic but no
bwrap, at the same concurrency. The corpus runs as one shuffled batch (as RL rollouts would), optionally
also category by category (``--by-category``). Prints test executions per second for both, their ratio and
the number of tests whose verdicts differ (exit status 1 if any do).

    python benchmarks/sandbox_throughput.py                 # 320 programs
    python benchmarks/sandbox_throughput.py --quick         # 64 programs
    python benchmarks/sandbox_throughput.py --workers 4 --by-category
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from crlab.rewards import Sandbox, TestSpec, _harness, _server  # noqa: E402  # noqa: E402
from crlab.rewards.sandbox import _finish, job_request  # noqa: E402

N_TESTS = 8


def _sizes(rng: random.Random, lo: int, hi: int, big: int) -> list[int]:
    """Sizes of the test inputs: small random ones, then one large one that trips the slow variant."""
    return [rng.randint(lo, hi) for _ in range(N_TESTS - 1)] + [big]


def _stdin_problems(rng: random.Random) -> list[tuple[str, TestSpec, dict]]:
    """(name, spec, variants) for stdin problems; variants map category -> program."""
    out = []
    sums = [[rng.randint(-1000, 1000) for _ in range(k)] for k in _sizes(rng, 1, 40, 50)]
    out.append(
        (
            "sum",
            TestSpec(
                "stdin",
                tuple(f"{len(a)}\n{' '.join(map(str, a))}\n" for a in sums),
                tuple(f"{sum(a)}\n" for a in sums),
            ),
            {
                "correct": "n = int(input())\nprint(sum(map(int, input().split())))",
                "wrong": "n = int(input())\nprint(sum(map(int, input().split())) + (n % 3 == 0))",
                "crash": "n = int(input())\nxs = list(map(int, input().split()))\nprint(xs[n])",
                "timeout": "n = int(input())\nxs = list(map(int, input().split()))\nwhile len(xs) > 45:\n    pass\nprint(sum(xs))",
            },
        )
    )
    words = [
        " ".join(rng.choice(["ab", "cd", "efg", "h", "ijk"]) for _ in range(k)) for k in _sizes(rng, 1, 7, 8)
    ]
    out.append(
        (
            "reverse",
            TestSpec(
                "stdin",
                tuple(w + "\n" for w in words),
                tuple(" ".join(reversed(w.split())) + "\n" for w in words),
            ),
            {
                "correct": "print(' '.join(input().split()[::-1]))",
                "wrong": "print(' '.join(input().split()))",
                "crash": "w = input().split()\nprint(w[::-1][5])",
                "timeout": "w = input().split()\nwhile len(w) == 8:\n    pass\nprint(' '.join(w[::-1]))",
            },
        )
    )
    ns = _sizes(rng, 1, 190, 200)
    fib = [_fib(n) for n in ns]
    out.append(
        (
            "fib",
            TestSpec("stdin", tuple(f"{n}\n" for n in ns), tuple(f"{f}\n" for f in fib)),
            {
                "correct": "n = int(input())\na, b = 0, 1\nfor _ in range(n):\n    a, b = b, (a + b) % 1000000007\nprint(a)",
                "wrong": "n = int(input())\na, b = 0, 1\nfor _ in range(n - 1):\n    a, b = b, (a + b) % 1000000007\nprint(a)",
                "crash": "n = int(input())\nprint([0, 1, 1, 2][n])",
                "timeout": "n = int(input())\nwhile n > 195:\n    pass\na, b = 0, 1\nfor _ in range(n):\n    a, b = b, (a + b) % 1000000007\nprint(a)",
            },
        )
    )
    return out


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % 1000000007
    return a


def _functional_problems(rng: random.Random) -> list[tuple[str, TestSpec, dict]]:
    out = []
    lists = [[rng.randint(-50, 50) for _ in range(k)] for k in _sizes(rng, 0, 25, 30)]
    out.append(
        (
            "sort",
            TestSpec(
                "functional",
                tuple(json.dumps([xs]) for xs in lists),
                tuple(json.dumps(sorted(xs)) for xs in lists),
                fn_name="sortList",
            ),
            {
                "correct": "class Solution:\n    def sortList(self, xs: List[int]) -> List[int]:\n        return sorted(xs)",
                "wrong": "class Solution:\n    def sortList(self, xs: List[int]) -> List[int]:\n        return sorted(xs)[1:]",
                "crash": "class Solution:\n    def sortList(self, xs):\n        return sorted(xs)[len(xs) // 2 + 20:] + [xs[40]]",
                "timeout": "class Solution:\n    def sortList(self, xs):\n        while len(xs) > 28:\n            pass\n        return sorted(xs)",
            },
        )
    )
    strs = ["".join(rng.choice("abca") for _ in range(k)) for k in _sizes(rng, 1, 8, 9)]
    out.append(
        (
            "counts",
            TestSpec(
                "functional",
                tuple(json.dumps([s]) for s in strs),
                tuple(json.dumps({c: s.count(c) for c in sorted(set(s))}) for s in strs),
                fn_name="counts",
            ),
            {
                "correct": "def counts(s):\n    return dict(Counter(s))",
                "wrong": "def counts(s):\n    return {c: 1 for c in s}",
                "crash": "def counts(s):\n    return {c: s.count(c) for c in s} | {'z': 1 / (len(s) - len(s))}",
                "timeout": "def counts(s):\n    while len(s) == 9:\n        pass\n    return dict(Counter(s))",
            },
        )
    )
    means = [[rng.random() * 100 for _ in range(k)] for k in _sizes(rng, 1, 18, 20)]
    out.append(
        (
            "mean",
            TestSpec(
                "functional",
                tuple(json.dumps([xs]) for xs in means),
                tuple(json.dumps(sum(xs) / len(xs)) for xs in means),
                fn_name="mean",
            ),
            {
                "correct": "def mean(xs):\n    return sum(xs) / len(xs)",
                "wrong": "def mean(xs):\n    return sum(xs) / (len(xs) + 1)",
                "crash": "def mean(xs):\n    return sum(xs) / (len(xs) - len(xs))",
                "timeout": "def mean(xs):\n    while len(xs) > 19:\n        pass\n    return sum(xs) / len(xs)",
            },
        )
    )
    return out


def mix(timeout_share: float = 0.05) -> list[tuple[str, float]]:
    """Category shares of the corpus; timeouts are programs too slow on some tests, as in RL rollouts."""
    return [("correct", 0.50 - timeout_share), ("wrong", 0.30), ("crash", 0.20), ("timeout", timeout_share)]


def build_corpus(n_programs: int, timeout_share: float = 0.05) -> dict[str, list[tuple[str, TestSpec]]]:
    rng = random.Random(20250922)
    problems = _stdin_problems(rng) + _functional_problems(rng)
    shares = mix(timeout_share)
    corpus: dict[str, list[tuple[str, TestSpec]]] = {cat: [] for cat, _ in shares}
    for cat, share in shares:
        for i in range(max(1, round(n_programs * share))):
            _name, spec, variants = problems[i % len(problems)]
            # a trailing comment makes every program text distinct without changing its behaviour
            corpus[cat].append((f"{variants[cat]}\n# program {cat}-{i}\n", spec))
    return corpus


# ---------------------------------------------------------------- baseline: a fresh interpreter per test
_BASE_CFG: dict = {}


def _baseline_init(time_limit: float, memory_mb: int, max_output: int) -> None:
    _BASE_CFG.update(
        time_limit=time_limit,
        memory_mb=memory_mb,
        max_output=max_output,
        nproc=64,
        nofile=128,
        uid=None,
        base=tempfile.mkdtemp(prefix="crlab-baseline-"),
        kill_all=False,
        python=sys.executable,
        script=_harness.__file__,
    )


def _baseline_test(job: dict, index: int) -> dict:
    return _server.run_test(job, index, _BASE_CFG)  # no `prepared`: exec a fresh interpreter


def run_baseline(jobs, workers: int, time_limit: float, memory_mb: int, max_output: int) -> list[list[str]]:
    tasks = []
    for program, spec in jobs:
        job = job_request(program, spec)
        tasks += [(job, spec, i) for i in range(len(spec))]
    with ProcessPoolExecutor(
        workers, initializer=_baseline_init, initargs=(time_limit, memory_mb, max_output)
    ) as pool:
        raws = list(pool.map(_baseline_test, [t[0] for t in tasks], [t[2] for t in tasks], chunksize=4))
    verdicts, k = [], 0
    for _program, spec in jobs:
        verdicts.append([_finish(raws[k + i], spec, i).verdict.value for i in range(len(spec))])
        k += len(spec)
    return verdicts


def _measure(jobs, args, limits) -> tuple[float, float, list, list]:
    with Sandbox(workers=args.workers, isolation=args.isolation, **limits) as sb:
        sb.run_many(jobs[:4])  # warm-up
        t0 = time.perf_counter()
        results = sb.run_many(jobs)
        t_sb = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = run_baseline(jobs, args.workers, args.time_limit, limits["memory_mb"], limits["max_output_bytes"])
    t_base = time.perf_counter() - t0
    return t_sb, t_base, [[r.verdict.value for r in res.results] for res in results], base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 programs instead of 320")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers = baseline processes")
    parser.add_argument("--time-limit", type=float, default=1.0)
    parser.add_argument("--isolation", default="bwrap", choices=["bwrap", "rlimit"])
    parser.add_argument("--by-category", action="store_true", help="also time each category as its own batch")
    parser.add_argument(
        "--timeout-share", type=float, default=0.05, help="share of programs that time out on a test (0 to 0.5)"
    )
    args = parser.parse_args()
    corpus = build_corpus(64 if args.quick else 320, args.timeout_share)
    limits = {"time_limit_s": args.time_limit, "memory_mb": 512, "max_output_bytes": 1 << 20}
    mixed = [job for jobs in corpus.values() for job in jobs]
    random.Random(7).shuffle(mixed)  # one mixed batch, as a batch of RL rollouts would be
    batches = [("mixed", mixed)] + (list(corpus.items()) if args.by_category else [])
    rows, mismatches = [], 0
    for name, jobs in batches:
        t_sb, t_base, ours, base = _measure(jobs, args, limits)
        flat_ours, flat_base = [v for o in ours for v in o], [v for b in base for v in b]
        bad = sum(a != b for a, b in zip(flat_ours, flat_base, strict=True))
        mismatches += bad
        rows.append((name, len(jobs), len(flat_ours), flat_ours.count("timeout"), t_sb, t_base, bad))
    _print_table(rows, args)
    print(
        "ceiling: each timeout costs its time limit of CPU in both arms; with T timeouts on W workers no "
        "sandbox can go below T x limit / W seconds, so the best possible ratio is baseline s / that floor"
    )
    print(f"verdict mismatches: {mismatches}")
    return 1 if mismatches else 0


def _print_table(rows, args) -> None:
    print(
        f"isolation={args.isolation} workers={args.workers} time_limit={args.time_limit}s; baseline: a fresh "
        f"python process per test, same rlimits, harness and verdicts, {args.workers} at a time"
    )
    head = (
        f"{'batch':<9} {'programs':>8} {'tests':>6} {'timeouts':>8} {'sandbox s':>10} {'exec/s':>8} "
        f"{'baseline s':>11} {'exec/s':>8} {'ratio':>7} {'ceiling':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, n_prog, n_tests, n_to, t_sb, t_base, _bad in rows:
        floor = n_to * args.time_limit / args.workers
        ceiling = f"{t_base / floor:>7.1f}x" if floor else f"{'-':>8}"
        print(
            f"{name:<9} {n_prog:>8} {n_tests:>6} {n_to:>8} {t_sb:>10.2f} {n_tests / t_sb:>8.1f} "
            f"{t_base:>11.2f} {n_tests / t_base:>8.1f} {t_base / t_sb:>6.1f}x {ceiling}"
        )


if __name__ == "__main__":
    sys.exit(main())

"""The bundled tiny task: procedural stdin/stdout problems for CPU-scale runs with a tiny model.

Problems come from the templates in :mod:`crlab.data.tiny_templates` (22 families such as "read a and b,
print a + b + 7", "read n integers, print the sum of those greater than 3", "read a string, print it
reversed"), each instantiated with the constants of its grid. Every instance has 5-8 tests (its edge
inputs first, then seeded random inputs; outputs computed by the template's Python reference), a short
canonical solution in one consistent style, and 2-3 wrong candidates of which at least one fails a test.
Some wrong candidates pass a subset of the tests, a few pass them all for some constants (e.g. ``s + s``
when the task says "print it 2 times"): their CRL label, decided by running, is then True.

Splits: an instance (a template with its constants, i.e. one question text) belongs to the held-out
``eval`` split when ``crc32(question) % 5 == 0``, else to ``train``; the two are disjoint whatever the
seed and sizes. The held-out split has two disjoint parts: ``val`` (``crc32(question) // 5 % 3 == 0``, 20
instances), on which a run picks its best checkpoint, and ``test`` (the other 53), on which it reports, so
that the reported number is not the maximum of noisy evaluations of itself. The seed orders the instances
and draws the random tests.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from crlab.data.problems import Problem
from crlab.data.prompts import code_prompt
from crlab.data.tiny_templates import HEADERS, TEMPLATES, Template, random_input, render_input
from crlab.rewards.spec import TestSpec

SPLITS = ("train", "eval", "val", "test", "all")
EVAL_MODULUS = 5
VAL_MODULUS = 3  # of the held-out split: one part in 3 for checkpoint selection, the rest for the report
PREFIXES = {"train": "tiny", "all": "tiny", "eval": "tiny-eval", "val": "tiny-val", "test": "tiny-test"}
MIN_TESTS, MAX_TESTS = 5, 8
CRITIQUE_TARGETS = {
    True: "The code does what the question asks.\n\\conclusion{T}",
    False: "The code does not do what the question asks.\n\\conclusion{F}",
}


def in_eval_split(question: str) -> bool:
    """Whether the instance with this question text is held out for evaluation."""
    return zlib.crc32(question.encode("utf-8")) % EVAL_MODULUS == 0


def split_of(question: str) -> str:
    """The split an instance belongs to: ``train``, or ``val`` or ``test`` (the two parts of ``eval``)."""
    if not in_eval_split(question):
        return "train"
    return "val" if zlib.crc32(question.encode("utf-8")) // EVAL_MODULUS % VAL_MODULUS == 0 else "test"


def _in_split(question: str, split: str) -> bool:
    found = split_of(question)
    return split == "all" or found == split or (split == "eval" and found != "train")


def _program(template: Template, body: str, params: dict[str, Any]) -> str:
    return f"{HEADERS[template.family]}\n{body.format(**params)}"


def _tests(template: Template, params: dict[str, Any], rng: random.Random) -> tuple[list[str], list[str]]:
    """Edge inputs first, then random ones (no duplicates) up to 5-8 tests; expected outputs by ``ref``."""
    count = rng.randint(MIN_TESTS, MAX_TESTS)
    args_list: list[tuple] = []
    for args in template.edges(params):
        if args not in args_list:
            args_list.append(args)
    for _ in range(200):
        if len(args_list) >= count:
            break
        args = random_input(template.family, rng)
        if args not in args_list:
            args_list.append(args)
    inputs = [render_input(template.family, args) for args in args_list]
    outputs = [f"{template.ref(params, *args)}\n" for args in args_list]
    return inputs, outputs


def _instances(split: str, seed: int) -> list[tuple[Template, dict[str, Any], str]]:
    """All (template, constants, question) of ``split``, interleaved round-robin over templates.

    Each template's instances are shuffled by ``seed``, the template order too; taking one instance per
    template in turn makes a small ``n`` cover every family evenly.
    """
    rng = random.Random(f"tiny-order/{seed}")
    queues = []
    for template in TEMPLATES:
        items = []
        for params in template.grid:
            question = template.question.format(**params)
            if _in_split(question, split):
                items.append((template, params, question))
        rng.shuffle(items)
        queues.append(items)
    rng.shuffle(queues)
    ordered = []
    for i in range(max(len(q) for q in queues)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return ordered


def generate_tiny_problems(n: int, seed: int = 0, split: str = "train") -> list[Problem]:
    """``n`` tiny problems of ``split`` (one of SPLITS), deterministic for ``seed``.

    Ids are ``tiny-0000``... (``tiny-eval-0000``, ``tiny-val-0000``, ``tiny-test-0000``... for the held-out
    splits). Raises ValueError when the split
    has fewer than ``n`` distinct instances.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown tiny split {split!r}; valid: {', '.join(SPLITS)}")
    instances = _instances(split, seed)
    if not 0 <= n <= len(instances):
        raise ValueError(
            f"the tiny task's {split!r} split has {len(instances)} distinct problems; asked for {n}"
        )
    prefix = PREFIXES[split]
    problems = []
    for index, (template, params, question) in enumerate(instances[:n]):
        pid = f"{prefix}-{index:04d}"
        key = json.dumps(params, sort_keys=True)
        inputs, outputs = _tests(template, params, random.Random(f"tiny-tests/{seed}/{template.name}/{key}"))
        problems.append(
            Problem(
                id=pid,
                question=question,
                spec=TestSpec(kind="stdin", inputs=tuple(inputs), outputs=tuple(outputs), problem_id=pid),
                source="tiny",
                solutions=(_program(template, template.body, params),),
                wrong_solutions=tuple(_program(template, body, params) for body in template.wrongs),
                difficulty=template.difficulty,
            )
        )
    return problems


def tiny_splits(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """``(train, eval)`` problem lists; no question appears in both."""
    return generate_tiny_problems(n_train, seed, "train"), generate_tiny_problems(n_eval, seed, "eval")


def code_target(solution: str) -> str:
    """The SFT completion for a code prompt: the program in a python fence."""
    return f"```python\n{solution.strip()}\n```"


def sft_examples(
    problems: Sequence[Problem], crl_rows: Iterable[Any] = (), style: str = "tiny"
) -> list[tuple[str, str]]:
    """(prompt, target completion) pairs for a supervised warm start.

    One code example per problem (its first reference solution in a python fence) and one critique
    example per CRL row (``row.prompt`` with a one-line verdict ending in ``\\conclusion{T}`` or
    ``\\conclusion{F}`` from ``row.label``, i.e. from running the candidate, see
    :func:`crlab.data.crl.build_crl_rows`).
    """
    examples = [(code_prompt(p, style), code_target(p.solutions[0])) for p in problems if p.solutions]
    examples.extend((row.prompt, CRITIQUE_TARGETS[bool(row.label)]) for row in crl_rows)
    return examples

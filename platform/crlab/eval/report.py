"""What an evaluation found: pass@k per problem and overall (with a 95% bootstrap interval over
problems), and critique accuracy with its confusion matrix. Plain data; ``metrics()`` gives the
``eval/...`` keys that training logs and sweeps optimise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from crlab.eval.passk import bootstrap_ci, pass_at_k
from crlab.rewards.critique import parse_conclusion


@dataclass(frozen=True)
class ProblemScore:
    id: str
    n: int  # samples
    c: int  # samples that passed every test
    pass_at: dict[int, float]


@dataclass(frozen=True)
class CodeEvalReport:
    source: str
    n: int
    ks: tuple[int, ...]
    problems: list[ProblemScore]
    pass_at: dict[int, float]  # k -> mean over problems
    ci: dict[int, tuple[float, float]]  # k -> 95% bootstrap interval over problems
    timings: dict[str, float] = field(default_factory=dict)  # generate_s, score_s, total_s

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """``eval/pass@1``, ``eval/pass@k`` for each k."""
        return {f"{prefix}pass@{k}": v for k, v in self.pass_at.items()}

    def to_json(self) -> dict:
        return {
            "source": self.source, "n": self.n, "problems": len(self.problems),
            "pass_at": {f"pass@{k}": v for k, v in self.pass_at.items()},
            "ci95": {f"pass@{k}": list(v) for k, v in self.ci.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }  # fmt: skip


def check_ks(n: int, ks: Sequence[int]) -> tuple[int, ...]:
    """``ks`` sorted and unique; each must satisfy 1 <= k <= n (pass@k needs n >= k samples)."""
    bad = [k for k in ks if not 1 <= k <= n]
    if bad:
        raise ValueError(
            f"k={bad[0]} needs at least {bad[0]} samples per problem, but n={n}; raise --n or lower --k"
        )
    return tuple(sorted(set(ks)))


def code_report(
    source: str, ids: Sequence[str], counts: Sequence[tuple[int, int]], ks: Sequence[int],
    timings: dict[str, float] | None = None,
) -> CodeEvalReport:  # fmt: skip
    """A report from (n, c) per problem; every problem must have the same n >= max(ks)."""
    if not counts:
        raise ValueError("code_report: no problems were evaluated")
    n = min(n for n, _ in counts)
    ks = check_ks(n, ks)
    problems = [
        ProblemScore(pid, pn, pc, {k: pass_at_k(pn, pc, k) for k in ks})
        for pid, (pn, pc) in zip(ids, counts, strict=True)
    ]
    means, cis = {}, {}
    for k in ks:
        values = [p.pass_at[k] for p in problems]
        means[k] = sum(values) / len(values)
        cis[k] = bootstrap_ci(values)
    return CodeEvalReport(source, n, ks, problems, means, cis, dict(timings or {}))


@dataclass(frozen=True)
class CritiqueReport:
    """Critique accuracy on labelled (question, candidate) rows; "positive" means judged correct (T).

    ``accuracy`` counts an unparsable answer as wrong (as the training reward does); ``parsable`` is the
    share of answers with a readable ``\\conclusion{}``; the confusion matrix counts parsable answers only.
    """

    n: int
    accuracy: float
    parsable: float
    tp: int
    fp: int
    tn: int
    fn: int
    unparsable: int
    ci: tuple[float, float] = (0.0, 0.0)  # 95% bootstrap interval of the accuracy, over judgments

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {f"{prefix}critique_acc": self.accuracy, f"{prefix}critique_parsable": self.parsable}

    def to_json(self) -> dict:
        return {
            "n": self.n, "accuracy": self.accuracy, "parsable": self.parsable,
            "confusion": {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn},
            "unparsable": self.unparsable, "ci95": list(self.ci),
        }  # fmt: skip


def critique_report(responses: Sequence[str], labels: Sequence[bool]) -> CritiqueReport:
    """Score critiques against their labels (True: the candidate is correct)."""
    if len(responses) != len(labels):
        raise ValueError(f"critique_report: {len(responses)} responses but {len(labels)} labels")
    if not responses:
        raise ValueError("critique_report: no critique rows")
    tp = fp = tn = fn = unparsable = 0
    correct = []
    for text, label in zip(responses, labels, strict=True):
        judged = parse_conclusion(text)
        correct.append(float(judged is not None and judged == bool(label)))
        if judged is None:
            unparsable += 1
        elif judged and label:
            tp += 1
        elif judged:
            fp += 1
        elif label:
            fn += 1
        else:
            tn += 1
    n = len(responses)
    return CritiqueReport(
        n, (tp + tn) / n, (n - unparsable) / n, tp, fp, tn, fn, unparsable, bootstrap_ci(correct)
    )

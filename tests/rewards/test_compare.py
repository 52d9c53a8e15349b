"""Output comparison (LiveCodeBench rules for stdout; JSON values for functional tests)."""

from __future__ import annotations

import pytest

from crlab.rewards.spec import outputs_match, tokens_match, values_match

STDOUT_CASES = [
    # identical
    ("3\n", "3\n", True),
    # missing final newline
    ("3", "3\n", True),
    # trailing spaces on a line
    ("1 2   \n3\t\n", "1 2\n3\n", True),
    # trailing empty lines
    ("1\n\n\n", "1\n", True),
    # leading empty lines (LiveCodeBench strips the whole output)
    ("\n\n1\n", "1\n", True),
    # CRLF line ends
    ("1\r\n2\r\n", "1\n2\n", True),
    # different number of lines
    ("1\n2\n", "1\n", False),
    # same tokens, different spacing inside a line
    ("1   2\n", "1 2\n", True),
    # leading spaces on a line
    ("  1 2\n", "1 2\n", True),
    # tokens split over lines are not the same output
    ("1\n2\n", "1 2\n", False),
    # float within tolerance
    ("0.3333333\n", "0.333333333\n", True),
    # float outside tolerance
    ("0.334\n", "0.333333333\n", False),
    # int vs float of the same value
    ("2.0\n", "2\n", True),
    # integers compare exactly, however long
    ("123456789012345678901234567890\n", "123456789012345678901234567891\n", False),
    # leading zeros and signs of integers
    ("007 -0 +5\n", "7 0 5\n", True),
    # exponent notation
    ("1e-3\n", "0.001\n", True),
    # words must match exactly (case-sensitive)
    ("YES\n", "Yes\n", False),
    # a word against a number
    ("abc\n", "1\n", False),
    # nan and inf are words, not numbers
    ("nan\n", "nan\n", True),
    ("inf\n", "1e999\n", False),
    # extra token on a line
    ("1 2 3\n", "1 2\n", False),
    # empty output against empty expected
    ("", "\n", True),
    # empty output against an answer
    ("", "0\n", False),
]


@pytest.mark.parametrize(("got", "expected", "ok"), STDOUT_CASES)
def test_outputs_match(got, expected, ok):
    assert outputs_match(got, expected) is ok


TOKEN_CASES = [
    # equal strings
    ("abc", "abc", True),
    # integer values equal
    ("-012", "-12", True),
    # integer values differ
    ("12", "13", False),
    # relative tolerance on large floats
    ("1000000.5", "1000000.0", True),
    # absolute tolerance near zero
    ("0.0000001", "0", True),
    # malformed numbers are plain words
    ("1..2", "1.2", False),
]


@pytest.mark.parametrize(("a", "b", "ok"), TOKEN_CASES)
def test_tokens_match(a, b, ok):
    assert tokens_match(a, b) is ok


VALUE_CASES = [
    # equal ints
    (3, 3, True),
    # different ints
    (3, 4, False),
    # float tolerance
    (0.1 + 0.2, 0.3, True),
    # int and float of the same value
    (2, 2.0, True),
    # a bool is not an int
    (True, 1, False),
    (1, True, False),
    # bools
    (False, False, True),
    # tuples and lists are the same
    ((1, 2), [1, 2], True),
    # nested lists with floats
    ([[1.0000000001, 2]], [[1, 2]], True),
    # length differs
    ([1, 2], [1, 2, 3], False),
    # dicts by key
    ({"a": 1, "b": [2]}, {"b": [2], "a": 1}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    # strings exactly
    ("abc", "abc", True),
    ("abc", "abc ", False),
    # None
    (None, None, True),
    (None, 0, False),
    # a string is not a number
    ("3", 3, False),
    # an int too large for a float against a float
    (10**400, 1.0, False),
    # nan against nan (both not-a-number)
    (float("nan"), float("nan"), True),
]


@pytest.mark.parametrize(("got", "expected", "ok"), VALUE_CASES)
def test_values_match(got, expected, ok):
    assert values_match(got, expected) is ok

"""TestSpec validation: every malformed spec raises TestSpecError naming the problem id and the field."""

from __future__ import annotations

import pytest

from crlab.rewards import TestSpec, TestSpecError

CHECK = "def check(candidate):\n    assert candidate(1) == 2\n"

VALID = [
    # stdin: one raw input text and one expected stdout per test
    ({"kind": "stdin", "inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}, 2),
    # functional: JSON argument list and JSON return value; fn_name required
    ({"kind": "functional", "inputs": ["[1, 2]"], "outputs": ["3"], "fn_name": "add"}, 1),
    # functional: any JSON value as the expected output
    (
        {
            "kind": "functional",
            "inputs": ['[[1, 2], "x"]'],
            "outputs": ['{"a": [1.5, null]}'],
            "fn_name": "f",
        },
        1,
    ),
    # assert: check_code + entry_point, no inputs; counts as one test
    ({"kind": "assert", "check_code": CHECK, "entry_point": "inc"}, 1),
    # assert: explicit empty inputs/outputs are fine
    ({"kind": "assert", "inputs": [], "outputs": [], "check_code": CHECK, "entry_point": "inc"}, 1),
    # the problem id may travel inside the dict
    ({"kind": "stdin", "inputs": [""], "outputs": [""], "problem_id": "lcb/42"}, 1),
]

INVALID = [
    # not a dict at all
    (["stdin"], "<spec>"),
    # kind missing
    ({"inputs": ["1"], "outputs": ["1"]}, "kind"),
    # kind unknown
    ({"kind": "interactive", "inputs": ["1"], "outputs": ["1"]}, "kind"),
    # kind of the wrong type
    ({"kind": ["stdin"], "inputs": ["1"], "outputs": ["1"]}, "kind"),
    # inputs missing
    ({"kind": "stdin", "outputs": ["1"]}, "inputs"),
    # outputs missing
    ({"kind": "stdin", "inputs": ["1"]}, "outputs"),
    # inputs is a string, not a list of strings
    ({"kind": "stdin", "inputs": "1 2", "outputs": ["3"]}, "inputs"),
    # an input that is not a string
    ({"kind": "stdin", "inputs": ["1", 2], "outputs": ["1", "2"]}, "inputs[1]"),
    # an output that is not a string
    ({"kind": "stdin", "inputs": ["1"], "outputs": [None]}, "outputs[0]"),
    # no test cases
    ({"kind": "stdin", "inputs": [], "outputs": []}, "inputs"),
    # inputs and outputs do not pair up
    ({"kind": "stdin", "inputs": ["1", "2"], "outputs": ["1"]}, "outputs"),
    # unknown field (typo of fn_name)
    ({"kind": "functional", "inputs": ["[1]"], "outputs": ["1"], "fname": "f"}, "fname"),
    # functional without fn_name
    ({"kind": "functional", "inputs": ["[1]"], "outputs": ["1"]}, "fn_name"),
    # functional fn_name that is not an identifier
    ({"kind": "functional", "inputs": ["[1]"], "outputs": ["1"], "fn_name": "Solution.f"}, "fn_name"),
    # functional input that is not JSON
    ({"kind": "functional", "inputs": ["[1, 2"], "outputs": ["3"], "fn_name": "f"}, "inputs[0]"),
    # functional input that is JSON but not an argument list
    ({"kind": "functional", "inputs": ['{"a": 1}'], "outputs": ["3"], "fn_name": "f"}, "inputs[0]"),
    # functional output that is not JSON
    ({"kind": "functional", "inputs": ["[1]", "[2]"], "outputs": ["1", "two"], "fn_name": "f"}, "outputs[1]"),
    # assert without check_code
    ({"kind": "assert", "entry_point": "f"}, "check_code"),
    # assert without entry_point
    ({"kind": "assert", "check_code": CHECK}, "entry_point"),
    # assert check_code that defines no check
    ({"kind": "assert", "check_code": "assert True\n", "entry_point": "f"}, "check_code"),
    # assert check_code with a syntax error
    ({"kind": "assert", "check_code": "def check(c)\n    pass\n", "entry_point": "f"}, "check_code"),
    # assert entry_point that is not an identifier
    ({"kind": "assert", "check_code": CHECK, "entry_point": "f()"}, "entry_point"),
    # assert specs must not carry stdin tests
    (
        {"kind": "assert", "inputs": ["1"], "outputs": ["1"], "check_code": CHECK, "entry_point": "f"},
        "inputs",
    ),
]


@pytest.mark.parametrize(("d", "n"), VALID)
def test_valid_specs_round_trip(d, n):
    spec = TestSpec.from_dict(d, problem_id="p1") if "problem_id" not in d else TestSpec.from_dict(d)
    assert len(spec) == n
    assert isinstance(spec.inputs, tuple) and isinstance(spec.outputs, tuple)
    assert TestSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(("d", "field"), INVALID)
def test_invalid_specs_name_problem_and_field(d, field):
    with pytest.raises(TestSpecError) as err:
        TestSpec.from_dict(d, problem_id="lcb/1234")
    assert err.value.problem_id == "lcb/1234"
    assert err.value.field == field
    assert "lcb/1234" in str(err.value) and repr(field) in str(err.value)


def test_problem_id_from_dict_is_used_in_errors():
    with pytest.raises(TestSpecError, match="abc/7"):
        TestSpec.from_dict({"kind": "nope", "problem_id": "abc/7"})


def test_direct_construction_is_validated_too():
    with pytest.raises(TestSpecError) as err:
        TestSpec(kind="functional", inputs=("not json",), outputs=("1",), fn_name="f", problem_id="x")
    assert err.value.field == "inputs[0]"


def test_spec_error_is_a_value_error():
    assert issubclass(TestSpecError, ValueError)


def test_kind_is_a_test_kind_and_written_back_as_plain_text():
    import json

    from crlab.rewards.spec import TestKind

    spec = TestSpec.from_dict({"kind": "stdin", "inputs": ["1\n"], "outputs": ["1\n"]})
    assert spec.kind is TestKind.STDIN and spec.kind == "stdin"  # a StrEnum: equal to the stored string
    written = spec.to_dict()
    assert type(written["kind"]) is str and json.loads(json.dumps(written)) == written
    assert TestSpec.from_dict(written) == spec


@pytest.mark.parametrize(
    ("option", "allowed"), [("harness", "strict, lcb, authors"), ("isolation", "bwrap, rlimit")]
)
def test_the_sandbox_names_the_allowed_choices(option, allowed):
    from crlab.rewards import Sandbox

    with pytest.raises(ValueError, match=f"{option} must be one of {allowed}, got 'nope'"):
        Sandbox(**{option: "nope"})

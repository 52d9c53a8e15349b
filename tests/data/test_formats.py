"""Problem loaders: LiveCodeBench (incl. its base64/zlib/pickle private tests), rStar-style, HumanEval."""

import base64
import json
import pickle
import zlib

import pytest

from crlab.data.formats import load_livecodebench, load_rstar
from crlab.data.problems import DataFormatError
from crlab.data.sources import load_problems


def lcb_pack(tests):
    """Private tests the way LiveCodeBench ships them: base64(zlib(pickle(json text)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


LCB_STDIN = {
    "question_id": "abc001_a",
    "question_content": "Print a + b.",
    "starter_code": "",
    "difficulty": "easy",
    "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]),
    "metadata": "{}",
}
LCB_FUNCTIONAL = {
    "question_id": "two-sum",
    "question_content": "Return the indices of the two numbers adding up to target.",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    "difficulty": "medium",
    "public_test_cases": json.dumps(
        [{"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"}]
    ),
    "private_test_cases": lcb_pack([{"input": "[3,2,4]\n6", "output": "[1,2]", "testtype": "functional"}]),
    "metadata": json.dumps({"func_name": "twoSum"}),
}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_livecodebench_stdin_and_packed_functional(tmp_path):
    path = write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL])
    stdin, functional = load_livecodebench(path)
    assert stdin.id == "abc001_a" and stdin.source == "livecodebench" and stdin.difficulty == "easy"
    assert stdin.spec.kind == "stdin"
    assert stdin.spec.inputs == ("1 2\n", "5 5\n") and stdin.spec.outputs == ("3\n", "10\n")
    assert functional.spec.kind == "functional" and functional.spec.fn_name == "twoSum"
    # one JSON value per input line -> JSON text of the argument list; outputs are normalised JSON text
    assert [json.loads(s) for s in functional.spec.inputs] == [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]]
    assert [json.loads(s) for s in functional.spec.outputs] == [[0, 1], [1, 2]]
    assert functional.starter_code.startswith("class Solution")


def test_livecodebench_pickle_with_globals_is_refused(tmp_path):
    # a pickle that would call a function (any global) is refused, not executed
    hostile = base64.b64encode(zlib.compress(pickle.dumps(print))).decode()
    path = write_jsonl(tmp_path / "evil.jsonl", [{**LCB_STDIN, "private_test_cases": hostile}])
    with pytest.raises(DataFormatError, match=r"evil\.jsonl:1: field 'private_test_cases'.*refusing"):
        load_livecodebench(path)


BAD_ROWS = [
    # line 2 is not JSON
    ([LCB_STDIN, "{not json"], 2, "<row>"),
    # missing statement on line 1
    ([{k: v for k, v in LCB_STDIN.items() if k != "question_content"}], 1, "question_content"),
    # public tests are not JSON
    ([LCB_STDIN, {**LCB_STDIN, "public_test_cases": "[{"}], 2, "public_test_cases"),
    # an unknown test type, reported with its index
    (
        [{**LCB_STDIN, "public_test_cases": json.dumps([{"input": "", "output": "", "testtype": "x"}])}],
        1,
        "public_test_cases[0].testtype",
    ),
    # functional tests without a function name
    ([{**LCB_FUNCTIONAL, "metadata": "{}"}], 1, "metadata"),
    # private tests neither JSON nor a valid base64 pack
    ([{**LCB_STDIN, "private_test_cases": "%%%"}], 1, "private_test_cases"),
]


@pytest.mark.parametrize(("rows", "line", "field"), BAD_ROWS)
def test_livecodebench_bad_rows_name_file_line_field(tmp_path, rows, line, field):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError) as info:
        load_livecodebench(path)
    assert str(info.value).startswith(f"{path}:{line}: field {field!r}")
    assert (info.value.line, info.value.field) == (line, field)


RSTAR_ROWS = [
    {
        "question_id": "r1",
        "question": "Print n twice.",
        "inputs": ["3\n", "4\n"],
        "outputs": ["6\n", "8\n"],
        "solutions": ["print(2 * int(input()))"],
    },
    # lists given as JSON text; functional with fn_name: inputs are argument lists
    {
        "id": "r2",
        "question": "Add.",
        "fn_name": "add",
        "starter_code": "def add(a, b):\n",
        "inputs": json.dumps([[1, 2], "[3, 4]"]),
        "outputs": json.dumps([3, "7"]),
    },
]


def test_rstar(tmp_path):
    p1, p2 = load_rstar(write_jsonl(tmp_path / "rs.jsonl", RSTAR_ROWS))
    assert (p1.id, p1.spec.kind, p1.spec.inputs) == ("r1", "stdin", ("3\n", "4\n"))
    assert p1.solutions == ("print(2 * int(input()))",) and p1.source == "rstar"
    assert (p2.id, p2.spec.kind, p2.spec.fn_name, p2.starter_code) == (
        "r2",
        "functional",
        "add",
        "def add(a, b):\n",
    )
    assert [json.loads(s) for s in p2.spec.inputs] == [[1, 2], [3, 4]]
    assert [json.loads(s) for s in p2.spec.outputs] == [3, 7]


def test_rstar_bad_row(tmp_path):
    # 1 output for 2 inputs on line 2
    rows = [RSTAR_ROWS[0], {**RSTAR_ROWS[0], "outputs": ["6\n"]}]
    with pytest.raises(DataFormatError, match=r"rs\.jsonl:2: field 'outputs': 1 outputs for 2 inputs"):
        load_rstar(write_jsonl(tmp_path / "rs.jsonl", rows))


# Rows in the shape of microsoft/rStar-Coder's ``seed_testcase`` config, every column of its card, exported
# to JSONL by ``datasets``: inputs/outputs/is_synthesized/test_case_type are JSON text of per-test lists; a
# functional test's input is itself the JSON text of the argument list and its output the JSON text of the
# return value; func_name and class_name are "" for a stdin problem. (The tag values in test_case_type are
# made up here: the loader does not read them.)
SEED_FUNCTIONAL = {
    "question_id": "seed-two-sum",
    "question": "Return the indices of the two numbers of nums that add up to target.",
    "starter_code": "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
    "inputs": json.dumps(
        [json.dumps([[2, 7, 11, 15], 9]), json.dumps([[3, 2, 4], 6]), json.dumps([[3, 3], 6])]
    ),
    "outputs": json.dumps([json.dumps([0, 1]), json.dumps([1, 2]), json.dumps([0, 1])]),
    "is_synthesized": json.dumps([False, False, True]),
    "test_case_type": json.dumps(["official", "official", "small"]),
    "func_name": "twoSum",
    "class_name": "Solution",
}
SEED_STDIN = {
    "question_id": "seed-double",
    "question": "Read n and print 2n.",
    "starter_code": "",
    "inputs": json.dumps(["3\n", "10\n"]),
    "outputs": json.dumps(["6\n", "20\n"]),
    "is_synthesized": json.dumps([False, True]),
    "test_case_type": json.dumps(["official", "small"]),
    "func_name": "",
    "class_name": "",
}
TWO_SUM = (
    "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
    "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
    "                return [seen[target - x], i]\n            seen[x] = i\n"
)
TWO_SUM_WRONG = "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\n"


def test_rstar_reads_published_seed_testcase_rows(tmp_path):
    func, stdin = load_rstar(write_jsonl(tmp_path / "seed.jsonl", [SEED_FUNCTIONAL, SEED_STDIN]))
    assert (func.id, func.spec.kind, func.spec.fn_name) == ("seed-two-sum", "functional", "twoSum")
    assert func.spec.inputs == ("[[2, 7, 11, 15], 9]", "[[3, 2, 4], 6]", "[[3, 3], 6]")
    assert func.spec.outputs == ("[0, 1]", "[1, 2]", "[0, 1]")
    assert func.starter_code.startswith("class Solution:\n    def twoSum(")
    assert (stdin.id, stdin.spec.kind, stdin.spec.fn_name) == ("seed-double", "stdin", None)
    assert (stdin.spec.inputs, stdin.spec.outputs) == (("3\n", "10\n"), ("6\n", "20\n"))
    assert load_problems(str(tmp_path / "seed.jsonl"))[0].source == "rstar"  # format guessed from the row


def test_published_rows_run_in_the_sandbox(tmp_path, sandbox):
    func, stdin = load_rstar(write_jsonl(tmp_path / "seed.jsonl", [SEED_FUNCTIONAL, SEED_STDIN]))
    half = "n = int(input())\nprint(2 * n if n < 5 else n)"  # right on 3, wrong on 10
    rates = [
        sandbox.run(program, problem.spec).pass_rate
        for program, problem in [
            (TWO_SUM, func),
            (TWO_SUM_WRONG, func),  # [0, 1] is right for two of the three tests
            ("print(2 * int(input()))", stdin),
            (half, stdin),
        ]
    ]
    assert rates == [1.0, pytest.approx(2 / 3), 1.0, 0.5]


def test_rstar_synthetic_rl_testcase_row_is_stdin(tmp_path):
    row = {k: SEED_STDIN[k] for k in ("question_id", "question", "inputs", "outputs")}
    (p,) = load_rstar(write_jsonl(tmp_path / "syn.jsonl", [row]))
    assert (p.id, p.spec.kind, p.spec.inputs, p.starter_code) == ("seed-double", "stdin", ("3\n", "10\n"), "")


def test_rstar_fn_name_is_an_alias_of_func_name(tmp_path):
    old = {**SEED_FUNCTIONAL, "fn_name": "twoSum"}
    del old["func_name"], old["class_name"]
    both = {**SEED_FUNCTIONAL, "fn_name": "twoSum"}
    a, b = load_rstar(write_jsonl(tmp_path / "rs.jsonl", [old, both]))
    assert a.spec == b.spec == load_rstar(write_jsonl(tmp_path / "new.jsonl", [SEED_FUNCTIONAL]))[0].spec
    # a top-level function (class_name "") is called as well as a Solution method
    top = {**SEED_FUNCTIONAL, "class_name": "", "starter_code": ""}
    (p,) = load_rstar(write_jsonl(tmp_path / "top.jsonl", [top]))
    assert p.spec.fn_name == "twoSum" and p.starter_code == ""


@pytest.mark.parametrize(
    "change, field, reason",
    [
        (
            {"class_name": "LRUCache"},
            "class_name",
            "'LRUCache': only a top-level function or a method of class",
        ),
        ({"func_name": ""}, "func_name", "missing (class_name is 'Solution')"),
        ({"func_name": 7}, "func_name", "expected str, got int"),
        ({"fn_name": "threeSum"}, "fn_name", "'threeSum' differs from func_name 'twoSum'"),
        ({"func_name": "two sum"}, "func_name", "'two sum' is not a Python identifier"),
        ({"fn_name": "f-1", "func_name": ""}, "fn_name", "'f-1' is not a Python identifier"),
        (
            {"inputs": json.dumps(["[[1], 1]", "[[2], 2", "[[3], 3]"])},
            "inputs[1]",
            "functional value is not JSON text: '[[2], 2'",
        ),
        ({"inputs": json.dumps(["[[1], 1]", "[[2], 2]", "3"])}, "inputs", "argument list"),
        ({"inputs": json.dumps(["[[1], 1]"])}, "outputs", "3 outputs for 1 inputs"),
    ],
)
def test_rstar_published_row_errors_name_file_line_field(tmp_path, change, field, reason):
    rows = [SEED_STDIN, {**SEED_FUNCTIONAL, **change}]
    with pytest.raises(DataFormatError) as err:
        load_rstar(write_jsonl(tmp_path / "seed.jsonl", rows))
    assert (err.value.line, err.value.field) == (2, field) and err.value.path.endswith("seed.jsonl")
    assert reason in err.value.reason and "\n" not in str(err.value)


def test_load_problems_dispatch(tmp_path):
    assert len(load_problems("tiny:5")) == 5
    assert all(p.id.startswith("tiny-eval-") for p in load_problems("tiny-eval:3"))
    lcb = write_jsonl(tmp_path / "a.jsonl", [LCB_STDIN])
    rs = write_jsonl(tmp_path / "b.jsonl", RSTAR_ROWS)
    assert load_problems(str(lcb))[0].source == "livecodebench"  # format guessed from the first row
    assert load_problems(str(rs))[0].source == "rstar"
    assert load_problems(f"livecodebench:{lcb}")[0].id == "abc001_a"
    assert load_problems(f"rstar:{rs}")[1].id == "r2"
    with pytest.raises(ValueError, match=r"valid forms: tiny; tiny:N.*humaneval.*rstar:/path.jsonl"):
        load_problems("mbpp")
    with pytest.raises(ValueError, match="N must be a positive integer"):
        load_problems("tiny:abc")


def test_humaneval_loads_164():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert first.id == "HumanEval/0" and first.spec.kind == "assert"
    assert first.spec.entry_point == "has_close_elements" and "def check(candidate)" in first.spec.check_code
    # the program to run is prompt + completion: the stored solution starts with the prompt
    assert first.solutions[0].startswith(first.starter_code) and first.question == first.starter_code

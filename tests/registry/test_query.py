"""`runs list --where`: a table of expressions over six registered runs, the same runs on SQLite and
PostgreSQL; sorting, columns; and every kind of bad input as a QueryError that says where and why."""

from __future__ import annotations

import pytest
from tests.registry.recording import Recording

from crlab import config as cfgmod
from crlab.errors import ConfigError
from crlab.registry import Registry
from crlab.registry.query import find_runs
from crlab.registry.query_json import like_to_glob
from crlab.registry.query_lang import QueryError

# id: (name, sweep, status, config overrides, {metric: [values at steps 1, 2, ...]})
RUNS = {
    "r1": ("base-0.0", "crl-ratio", "completed", ["data.crl_ratio=0.0", "tracking.tags=[tiny,ablation]"],
           {"reward/rl_mean": [0.2, 0.5, 0.4], "loss": [1.0, 0.8, 0.9], "eval/pass@1": [None, None, 0.30]}),
    "r2": ("base-0.2", "crl-ratio", "completed", ["data.crl_ratio=0.2", "tracking.tags=[tiny]"],
           {"reward/rl_mean": [0.3, 0.6, 0.7], "loss": [0.9, 0.7, 0.6], "eval/pass@1": [None, None, 0.45]}),
    "r3": ("base-0.5", "crl-ratio", "failed", ["data.crl_ratio=0.5", "seed=1", "grpo.lr=2e-6",
           "tracking.tags=[ablation]"], {"reward/rl_mean": [0.1, 0.2]}),
    "r4": ("solo", None, "running", ["data.crl_ratio=1.0", "seed=10", "grpo.lr=1e-5", "model.path=tiny://coder",
           "data.max_problems=10", "grpo.dynamic_sampling=false", "phases.0.crl_reward_scale=0.5",
           "deepspeed.overrides.foo=3"], {"reward/rl_mean": [0.9]}),
    "r5": ("Base-upper", "scale", "pending", ["data.crl_ratio=0.2", "seed=1", "tracking.tags=[Tiny]"], {}),
    "r6": ("bare", None, "killed", None, {}),  # a run registered with an empty config
}  # fmt: skip

CASES = [
    ("status = 'completed'", "r1 r2"),
    ("status != 'completed'", "r3 r4 r5 r6"),
    ("status in ('failed', 'running')", "r3 r4"),
    ("status not in ('failed', 'running')", "r1 r2 r5 r6"),
    ("config.data.crl_ratio = 0.2", "r2 r5"),
    ("config.data.crl_ratio >= 0.5", "r3 r4"),
    ("config.data.crl_ratio < 0.5 and sweep = 'crl-ratio'", "r1 r2"),
    ("config.data.crl_ratio = 0 OR config.data.crl_ratio = 1", "r1 r4"),
    ("config.grpo.lr > 1.5e-6", "r3 r4"),
    ("config.grpo.lr = 1e-6", "r1 r2 r5"),
    ("not config.grpo.lr = 1e-6", "r3 r4 r6"),  # r6 has no lr: the complement includes it
    ("config.grpo.lr != 1e-6", "r3 r4 r6"),
    ("config.seed < 9", "r1 r2 r3 r5"),  # as numbers: 10 > 9 (as text '10' < '9')
    ("config.seed in (1, 2)", "r3 r5"),
    ("config.model.path = 'tiny://coder'", "r4"),
    ("config.model.path like 'Qwen/%'", "r1 r2 r3 r5"),
    ("config.data.max_problems = null", "r1 r2 r3 r5 r6"),
    ("config.data.max_problems > 5", "r4"),
    ("config.grpo.dynamic_sampling = false", "r4"),
    ("config.grpo.dynamic_sampling = true", "r1 r2 r3 r5"),
    ("config.phases.0.crl_reward_scale < 0.8", "r4"),  # a nested list element's key
    ("config.deepspeed.overrides.foo = 3", "r4"),  # a key the schema leaves open: the value's type
    ("config.deepspeed.overrides.foo = '3'", ""),
    ("metrics.reward/rl_mean.last > 0.5", "r2 r4"),
    ("metrics.reward/rl_mean.max >= 0.5", "r1 r2 r4"),
    ("metrics.reward/rl_mean.min < 0.15", "r3"),
    ("metrics.loss.best < 0.65", "r2"),  # a loss is best at its lowest
    ("metrics.loss.best_step = 2", "r1"),
    ("metrics.reward/rl_mean.best_step = 3", "r2"),
    ("metrics.reward/rl_mean.n = 2", "r3"),
    ("metrics.eval/pass@1.last = null", "r3 r4 r5 r6"),
    ("metrics.eval/pass@1.best > 0.4 or status = 'running'", "r2 r4"),
    ("metrics.eval/pass@1.last != 0.3", "r2 r3 r4 r5 r6"),  # never evaluated counts as not 0.3
    ("metrics.reward/rl_mean.last_step = 2 and metrics.reward/rl_mean.last > 0.15", "r3"),
    ("tags = 'tiny'", "r1 r2"),  # contains; case-sensitive ('Tiny' is another tag)
    ("tags != 'tiny'", "r3 r4 r5 r6"),
    ("tags in ('ablation', 'Tiny')", "r1 r3 r5"),
    ("tags like 'ab%'", "r1 r3"),
    ("tags = null", "r4 r6"),
    ("config.tracking.tags = 'tiny'", "r1 r2"),
    ("name like 'base-%'", "r1 r2 r3"),  # case-sensitive on both databases
    ("name like 'base-0._'", "r1 r2 r3"),
    ("name not like '%-0.%'", "r4 r5 r6"),
    ("name < 'b'", "r5"),  # by code point: 'B' < 'b', whatever PostgreSQL's collation
    ("name >= 'base-0.2'", "r2 r3 r4"),
    ("not (status = 'completed' or sweep = 'scale') and config.seed >= 0", "r3 r4"),
    ("(config.data.crl_ratio = 0.2 or config.data.crl_ratio = 0.5) and not status = 'failed'", "r2 r5"),
    ("not not status = 'failed'", "r3"),
    ("sweep = null", "r4 r6"),
    ("sweep in ('scale')", "r5"),
    ("git_commit = 'abc123'", "r5"),
    ("git_dirty = true", "r1"),
    ("id in ('r1', 'r6')", "r1 r6"),
    ("attempt >= 1 and heartbeat != null", "r1 r2 r3 r4"),
    ("step >= 3", "r1 r2"),
    ("created > '2000-01-01' and created < '2100-01-01T00:00:00Z'", "r1 r2 r3 r4 r5 r6"),
    ("ended = null", "r4 r5 r6"),
]


@pytest.fixture(scope="module")
def reg(module_db_url: str):
    """The runs above, registered once per backend for the module (its tests only read them)."""
    with Registry(module_db_url) as registry:
        sweeps = {name: registry.create_sweep(name, {}).id for name in ("crl-ratio", "scale")}
        for run_id, (name, sweep, status, overrides, metrics) in RUNS.items():
            config = cfgmod.to_dict(cfgmod.load_config(None, overrides)) if overrides is not None else {}
            registry.create_run(
                name, config, run_id=run_id, sweep_id=sweeps.get(sweep), cell_key=run_id if sweep else None,
                git_commit="abc123" if run_id == "r5" else "fff000", git_dirty=run_id == "r1",
            )  # fmt: skip
            if status not in ("pending", "killed"):
                registry.start_attempt(run_id, host="h", pid=1)
            with Recording(registry, run_id) as rec:
                for step in range(1, 1 + max((len(v) for v in metrics.values()), default=0)):
                    values = {
                        k: v[step - 1]
                        for k, v in metrics.items()
                        if step <= len(v) and v[step - 1] is not None
                    }
                    rec.metrics(step, values)
            if status != "running":
                registry.finish_run(run_id, status) if status not in ("pending", "killed") else None
            if status == "killed":
                registry.update_run(run_id, status="killed")
        yield registry


def test_expressions_find_the_expected_runs(reg: Registry) -> None:
    assert len(CASES) >= 25
    wrong = {}
    for expression, expected in CASES:
        found = " ".join(r.id for r in find_runs(reg, expression))
        if found != expected:
            wrong[expression] = (found, expected)
    assert wrong == {}, "found, expected: " + repr(wrong)


def test_sort_limit_and_columns(reg: Registry) -> None:
    by_ratio = find_runs(reg, "sweep = 'crl-ratio'", sort="config.data.crl_ratio:desc")
    assert [r.id for r in by_ratio] == ["r3", "r2", "r1"]
    best = find_runs(reg, None, sort="metrics.reward/rl_mean.last:desc", limit=3)
    assert [r.id for r in best] == ["r4", "r2", "r1"]
    oldest_first = [r.id for r in find_runs(reg, None)]
    assert len(oldest_first) == 6 and [r.id for r in find_runs(reg, None, limit=2)] == oldest_first[-2:]
    missing_last = find_runs(reg, None, sort="metrics.reward/rl_mean.last")  # no value: last either way
    assert [r.id for r in missing_last] == ["r3", "r1", "r2", "r4", "r5", "r6"]
    assert [r.id for r in find_runs(reg, None, sort="name")] == ["r5", "r6", "r1", "r2", "r3", "r4"]
    two_keys = find_runs(reg, "config.seed >= 0", sort="config.seed:desc,config.data.crl_ratio:asc")
    assert [r.id for r in two_keys] == ["r4", "r5", "r3", "r1", "r2"]
    cols = ["id", "status", "sweep", "config.data.crl_ratio", "metrics.reward/rl_mean.last", "tags", "step"]
    (r2,) = find_runs(reg, "id = 'r2'", columns=cols)
    assert r2.values == {
        "id": "r2", "status": "completed", "sweep": "crl-ratio", "config.data.crl_ratio": 0.2,
        "metrics.reward/rl_mean.last": 0.7, "tags": ["tiny"], "step": 3,
    }  # fmt: skip
    (r6,) = find_runs(reg, "id = 'r6'", columns=cols)
    assert r6.values["config.data.crl_ratio"] is None and r6.values["metrics.reward/rl_mean.last"] is None
    assert [r.id for r in find_runs(reg, None, sweep_id=by_ratio[0].sweep_id, status="failed")] == ["r3"]


def _error(reg: Registry, where: str | None = None, **kw: object) -> str:
    with pytest.raises(QueryError) as info:
        find_runs(reg, where, **kw)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)  # one line, exit code 2 from the CLI
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    ("where", "expected", "column"),
    [
        ("status = ", "expected a value (a number, a 'string', true, false or null), found the end", 10),
        ("status = 'completed' and", "expected a key", 25),
        (
            "status 'completed'",
            "expected an operator (= != < <= > >= in like) after the key, found \"'completed'\"",
            8,
        ),
        ("(status = 'failed'", "expected ')'", 19),
        ("status = 'failed')", "expected 'and', 'or' or the end of the expression, found ')'", 18),
        ("status = 'failed", "unterminated string", 10),
        ("status ~ 'x'", "unexpected character '~'", 8),
        ("config.seed in 1, 2", "expected '(' to open the list of 'in'", 16),
        ("config.seed in (1 2)", "expected ',' or ')'", 19),
        ("config.seed not = 3", "expected 'in' or 'like' after 'not'", 17),
        ("3 = config.seed", "expected a key", 1),
        ("config.seed = 1.2.3", "'1.2.3' is not a number", 15),
        ("status = 'x' name = 'y'", "expected 'and', 'or' or the end of the expression, found 'name'", 14),
        ("", "expected a condition", 1),
    ],
)
def test_malformed_expressions_point_at_the_problem(
    reg: Registry, where: str, expected: str, column: int
) -> None:
    message = _error(reg, where)
    assert message.startswith("--where: ") and expected in message, message
    assert f"(column {column}: {where[: column - 1]}^{where[column - 1 :]})" in message, message


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("config.data.crl_ration = 0.2", "did you mean config.data.crl_ratio"),
        ("data.crl_ratio = 0.2", "did you mean config.data.crl_ratio"),
        ("statuss = 'failed'", "did you mean status"),
        ("config.data = 1", "config.data is a section"),
        (
            "metrics.reward/rl_men.last > 0",
            "no run has logged the metric 'reward/rl_men'; did you mean reward/rl_mean",
        ),
        ("metrics.reward/rl_mean.avg > 0", "'avg' is not a metric summary"),
        ("status > 3", "type mismatch: status is text but 3 is a number"),
        (
            "config.data.crl_ratio = '0.2'",
            "type mismatch: config.data.crl_ratio is a number but '0.2' is text",
        ),
        ("config.seed like '1%'", "like compares text; config.seed is a number"),
        ("name like 3", "the pattern must be a 'string'"),
        ("tags > 'a'", "tags is a list"),
        ("config.grpo.dynamic_sampling > false", "is true or false"),
        ("status = 'finished'", "unknown status 'finished'"),
        ("created > 'yesterday'", "is not a date or time"),
        ("created > 3", "type mismatch: created is a time but 3 is a number"),
        ("config.seed > null", "null can only be compared with = or !="),
        ("config.seed in (1, 'a')", "mix types"),
    ],
)
def test_unknown_keys_and_type_mismatches_are_errors(reg: Registry, where: str, expected: str) -> None:
    message = _error(reg, where)
    assert expected in message and "column " in message, message


def test_bad_sort_and_columns(reg: Registry) -> None:
    assert "--sort: " in _error(reg, sort="config.seed:up") and "KEY:desc" in _error(
        reg, sort="config.seed:up"
    )
    assert "did you mean status" in _error(reg, sort="created,statu:desc")
    assert "cannot be sorted" in _error(reg, sort="tags")
    message = _error(reg, columns=["id", "metrics.los.last"])
    assert message.startswith("--columns: ") and "did you mean loss" in message and "^metrics.los" in message


def test_like_patterns_become_globs() -> None:
    assert like_to_glob("a%b_c") == "a*b?c"
    assert like_to_glob(r"100\%") == "100%" and like_to_glob(r"a\_b") == "a_b"
    assert like_to_glob("x*y?[z]") == "x[*]y[?][[]z]"


def test_a_list_key_that_holds_no_list_contains_nothing(db_url: str) -> None:
    with Registry(db_url) as reg:
        reg.create_run("text", {"tracking": {"tags": "tiny"}}, run_id="t1")
        reg.create_run("object", {"tracking": {"tags": {"a": "tiny"}}}, run_id="t2")
        reg.create_run("numbers", {"tracking": {"tags": [1, "tiny"]}}, run_id="t3")
        assert [r.id for r in find_runs(reg, "tags = 'tiny'")] == ["t3"]
        assert [r.id for r in find_runs(reg, "tags = null")] == ["t1", "t2"]
        assert [r.id for r in find_runs(reg, "config.tracking.tags.1 = 'tiny'")] == ["t3"]

"""The ``eval`` section: off by default; cross-field checks name the key, where it was set, and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.config_checks import config_warnings, eval_metric_keys, selection_metric
from crlab.errors import ConfigError

ON = "eval:\n  source: tiny-eval\n  every: 10\n"


def test_eval_is_off_by_default_and_picks_the_best_checkpoint_by_pass_at_1() -> None:
    ev = load_config().eval
    assert ev.source is None and ev.crl_source is None and eval_metric_keys(ev) == []
    assert (ev.n, list(ev.k), ev.temperature, ev.select) == (1, [1], 0.0, None)
    assert selection_metric(ev) == "eval/pass@1" and ev.at_start is True and ev.select_source is None


def test_a_selection_source_picks_on_val_and_reports_on_eval() -> None:
    ev = load_config(overrides=["eval.source=tiny-test", "eval.select_source=tiny-val"]).eval
    assert eval_metric_keys(ev) == ["eval/pass@1", "val/pass@1"]
    assert selection_metric(ev) == "val/pass@1"
    assert selection_metric({"source": "tiny-eval"}) == "eval/pass@1"  # a stored run's config
    ev = load_config(overrides=["eval.source=tiny-test", "eval.select_source=tiny-val", "eval.select=eval/pass@1"]).eval
    assert selection_metric(ev) == "eval/pass@1"  # an explicit choice stands


def test_the_metrics_an_eval_makes() -> None:
    ev = load_config(overrides=["eval.source=humaneval", "eval.n=10", "eval.k=[1,5]"]).eval
    assert eval_metric_keys(ev) == ["eval/pass@1", "eval/pass@5"]
    ev = load_config(overrides=["eval.source=tiny-eval", "eval.crl_source=crl:tiny-eval"]).eval
    assert eval_metric_keys(ev) == ["eval/pass@1", "eval/critique_acc", "eval/critique_parsable"]
    ev = load_config(overrides=["eval.source=crl:rows.jsonl", "eval.select=eval/critique_acc"]).eval
    assert eval_metric_keys(ev) == ["eval/critique_acc", "eval/critique_parsable"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # pass@5 from one sample: the line of eval.k, and the fix
        (ON + "  k: [1, 5]\n", r"exp\.yaml:4: eval\.k: pass@5 needs at least 5 samples per problem, but eval\.n=1; raise eval\.n to 5"),
        (ON + "  n: 4\n  k: [0]\n", r"exp\.yaml:5: eval\.k: \[0\]: each k must be at least 1"),
        # a select metric the eval does not make
        (ON + "  select: eval/pass@5\n", r"exp\.yaml:4: eval\.select: 'eval/pass@5' is not a metric this eval makes \(eval/pass@1\)"),
        (ON + "  select: reward/rl_mean\n", r"eval\.select: 'reward/rl_mean' is not a metric"),
        # critique accuracy needs a critique source
        (ON + "  select: eval/critique_acc\n", r"eval\.select: 'eval/critique_acc' is not a metric"),
        (ON.replace("every: 10", "every: 0"), r"exp\.yaml:3: eval\.every: 0 is outside \[1, inf\]"),
        (ON + "  top_p: 1.5\n", r"exp\.yaml:4: eval\.top_p: 1\.5 is outside"),
        (ON + "  max_problems: 0\n", r"exp\.yaml:4: eval\.max_problems: 0 is outside"),
        (ON + "  since: 2024-08-01\n", r"exp\.yaml:4: eval\.since: a contest_date window needs eval\.source: livecodebench:FILE"),
        (ON.replace("tiny-eval", "''"), r"exp\.yaml:2: eval\.source: is empty"),
        # the selection set: disjoint from the reported one, a problem source, and with one to report on
        (ON + "  select_source: tiny-eval\n", r"exp\.yaml:4: eval\.select_source: 'tiny-eval' is eval\.source itself; name a disjoint source"),
        (ON + "  select_source: crl:rows.jsonl\n", r"eval\.select_source: 'crl:rows\.jsonl': checkpoints are selected on pass@k of problems"),
        (ON + "  select_source: tiny-val\n  select: eval/pass@5\n", r"eval\.select: 'eval/pass@5' is not a metric this eval makes \(eval/pass@1, val/pass@1\)"),
        # LiveCodeBench's evaluator scores LiveCodeBench problems only
        (ON + "  scoring: livecodebench\n", r"exp\.yaml:4: eval\.scoring: livecodebench scores LiveCodeBench sources, not 'tiny-eval'; use auto or strict"),
        (ON + "  scoring: lcb\n", r"exp\.yaml:4: eval\.scoring: 'lcb' is not one of auto, livecodebench, strict"),
    ],
)  # fmt: skip
def test_bad_eval_sections_name_file_line_key_and_fix(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_an_override_that_breaks_a_check_is_named(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(ON)
    with pytest.raises(ConfigError) as err:
        load_config(path, ["eval.n=2", "eval.k=[4]"])
    assert err.value.where == "override 'eval.k=[4]'" and "raise eval.n to 4" in err.value.message
    with pytest.raises(ConfigError) as err:  # a section set whole on the command line
        load_config(path, ["eval={source: tiny-eval, select: eval/pass@2}"])
    assert err.value.where == "override 'eval={source: tiny-eval, select: eval/pass@2}'"
    with pytest.raises(ConfigError) as err:  # a schema default: nothing to point at
        load_config(overrides=["data.crl_ratio=2"])
    assert err.value.where == "override 'data.crl_ratio=2'"


def test_greedy_samples_warn_that_pass_at_k_is_pass_at_1() -> None:
    cfg = load_config(overrides=["eval.source=tiny-eval", "eval.n=4", "eval.k=[1,4]"])
    (warning,) = config_warnings(cfg)
    assert "eval.n=4 with eval.temperature=0" in warning
    assert (
        config_warnings(load_config(overrides=["eval.source=tiny-eval", "eval.n=4", "eval.temperature=0.6"]))
        == []
    )


def test_a_livecodebench_window_takes_plain_yaml_dates(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("eval:\n  source: livecodebench:lcb.jsonl\n  since: 2024-08-01\n  until: 2025-02-01\n")
    ev = load_config(path, ["eval.until=2025-01-15"]).eval
    assert (ev.since, ev.until) == ("2024-08-01", "2025-01-15")

"""``recipe: authors``: the preset sets each switchable knob to the authors' value, under the experiment
file's keys and the overrides; ``recipe: platform`` (the default) leaves the schema's defaults alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# knob -> (the platform's default, the authors' value); docs/fidelity.md gives the sources
KNOBS = {
    "reward.code_extraction": ("last", "joined"),
    "reward.conclusion_parse": ("exact", "authors"),
    "reward.time_limit_s": (6.0, 5.0),
    "reward.fallback_time_limit_s": (None, 20.0),
    "reward.max_tests": (10, 10),
    "reward.harness": ("strict", "authors"),
    "eval.scoring": ("auto", "auto"),
    "data.crl_prompt": ("platform", "paper"),
    "data.overlong_prompts": ("keep", "filter"),
    "data.max_prompt_length": (4096, 4096),
    "grpo.single_sample_advantage": ("zero", "raw"),
    "grpo.dual_clip_c": (3.0, 3.0),
    "grpo.max_refill_rounds": (3, None),
    "grpo.train_eos": (True, False),
    "grpo.micro_batch_tokens": (None, 48000),
    "phases.0.crl_reward_scale": (0.8, 1.0),
    "phases.1.crl_reward_scale": (1.0, 1.0),
    "phases.0.max_response_length": (16384, 16384),
    "phases.1.max_response_length": (32768, 32768),
}


def _get(cfg: object, key: str):  # noqa: ANN202
    for part in key.split("."):
        step = int(part) if part.isdigit() else part
        cfg = getattr(cfg, part) if isinstance(step, str) and not isinstance(cfg, dict) else cfg[step]  # type: ignore[index]
    return cfg


@pytest.mark.parametrize("recipe,which", [("platform", 0), ("authors", 1)])
def test_each_knob_resolves_to_the_recipes_value(recipe: str, which: int) -> None:
    cfg = load_config(None, [f"recipe={recipe}"])
    assert cfg.recipe == recipe
    for key, values in KNOBS.items():
        assert _get(cfg, key) == values[which], key
    assert load_config(None, []).recipe == "platform"


def test_the_file_and_the_overrides_win_over_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("recipe: authors\nreward:\n  time_limit_s: 4.0\ndata:\n  crl_prompt: platform\n")
    cfg = load_config(path, ["reward.code_extraction=last"])
    assert cfg.recipe == "authors"
    assert (cfg.reward.time_limit_s, cfg.data.crl_prompt) == (4.0, "platform")  # the file's
    assert cfg.reward.code_extraction == "last"  # the override's
    assert (cfg.reward.conclusion_parse, cfg.reward.fallback_time_limit_s) == (
        "authors",
        20.0,
    )  # the recipe's
    assert load_config(path, ["recipe=platform"]).reward.fallback_time_limit_s is None  # an override drops it


def test_the_tiny_experiment_keeps_its_own_keys_under_the_recipe() -> None:
    cfg = load_config(REPO / "experiments/tiny_coder.yaml", ["recipe=authors"])
    assert cfg.reward.time_limit_s == 2.0 and [p.name for p in cfg.phases] == ["short", "long"]  # the file's
    assert (cfg.reward.code_extraction, cfg.data.overlong_prompts, cfg.data.crl_prompt) == (
        "joined",
        "filter",
        "paper",
    )


def test_an_unknown_recipe_names_where_it_was_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"recipe: unknown recipe 'paper'; valid: platform, authors") as exc:
        load_config(None, ["recipe=paper"])
    assert exc.value.where == "override 'recipe=paper'"
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\nrecipe: nope\n")
    with pytest.raises(ConfigError, match="unknown recipe 'nope'") as exc:
        load_config(path)
    assert exc.value.where == f"{path}:2"


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["reward.code_extraction=first"], r"reward\.code_extraction: 'first' is not one of last, joined"),
        (
            ["reward.conclusion_parse=loose"],
            r"reward\.conclusion_parse: 'loose' is not one of exact, authors",
        ),
        (["data.crl_prompt=table6"], r"data\.crl_prompt: 'table6' is not one of platform, paper"),
        (["data.overlong_prompts=drop"], r"data\.overlong_prompts: 'drop' is not one of keep, filter"),
        (
            ["grpo.single_sample_advantage=one"],
            r"grpo\.single_sample_advantage: 'one' is not one of zero, raw",
        ),
        (["reward.fallback_time_limit_s=6"], r"reward\.fallback_time_limit_s: 6.0 must be above"),
        (["recipe=authors", "reward.time_limit_s=30"], r"reward\.fallback_time_limit_s: 20.0 must be above"),
        (["grpo.group_size=1"], r"grpo\.group_size: 1 is outside \[2, inf\]"),
        (["reward.harness=verl"], r"reward\.harness: 'verl' is not one of strict, authors"),
    ],
)
def test_bad_switch_values(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_a_group_of_one_is_allowed_with_the_raw_rule() -> None:
    cfg = load_config(None, ["grpo.group_size=1", "grpo.single_sample_advantage=raw"])
    assert cfg.grpo.group_size == 1


def test_the_dry_run_shows_the_authors_values() -> None:
    cmd = [sys.executable, "-c", "from crlab.cli import main; main()", "run", "experiments/tiny_coder.yaml"]
    cmd += ["recipe=authors", "grpo.max_steps=2", "--dry-run", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["recipe"] == "authors"
    for key in ("reward.code_extraction", "reward.conclusion_parse", "reward.fallback_time_limit_s"):
        assert _get(data, key) == KNOBS[key][1]
    for key in ("data.crl_prompt", "data.overlong_prompts", "grpo.single_sample_advantage", "grpo.train_eos"):
        assert _get(data, key) == KNOBS[key][1]
    assert data["reward"]["time_limit_s"] == 2.0  # tiny_coder.yaml's own

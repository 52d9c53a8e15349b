"""The config schema: defaults are the paper's, YAML and key=value override, bad input names key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlab.config import config_hash, from_dict, load_config, nearest_keys, schema_keys, to_dict
from crlab.config_checks import config_warnings
from crlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_paper_recipe() -> None:
    cfg = load_config()
    g, r = cfg.grpo, cfg.rollout
    assert (g.group_size, g.prompts_per_step, g.mini_batch_size, g.lr, g.warmup_steps) == (
        8,
        128,
        64,
        1e-6,
        10,
    )
    assert (g.clip_low, g.clip_high, g.loss_agg, g.kl_coef, g.entropy_coef) == (
        0.2,
        0.3,
        "token-mean",
        0.0,
        0.0,
    )
    assert g.dynamic_sampling and g.epochs == 1
    assert (r.temperature, r.top_p, r.top_k) == (0.6, 0.95, 20)
    assert cfg.data.max_prompt_length == 4096 and cfg.data.crl_ratio == 0.2
    assert [(p.max_response_length, p.crl_reward_scale) for p in cfg.phases] == [(16384, 0.8), (32768, 1.0)]
    assert cfg.reward.max_tests == 10 and cfg.reward.crl_label_threshold == 0.8


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_every_shipped_experiment_loads(name: str) -> None:
    cfg = load_config(REPO / "experiments" / name)
    assert cfg.name and cfg.model.path


def test_shipped_experiments_match_the_paper_ratios() -> None:
    assert load_config(REPO / "experiments/rl_only_qwen3_4b.yaml").data.crl_ratio == 0.0
    assert load_config(REPO / "experiments/critique_coder_qwen3_8b.yaml").model.path == "Qwen/Qwen3-8B"


def test_precedence_schema_then_yaml_then_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "grpo:\n  lr: 3.0e-6\n  group_size: 4\n")
    cfg = load_config(path, ["grpo.lr=5e-6", "phases.1.crl_reward_scale=0.5", "tracking.tags=[a,b]"])
    assert cfg.grpo.lr == 5e-6  # override beats YAML
    assert cfg.grpo.group_size == 4  # YAML beats schema
    assert cfg.grpo.clip_high == 0.3  # schema default
    assert cfg.phases[1].crl_reward_scale == 0.5 and list(cfg.tracking.tags) == ["a", "b"]


def test_round_trip_through_a_plain_dict_and_stable_hash() -> None:
    cfg = load_config(overrides=["seed=7"])
    data = to_dict(cfg)
    assert to_dict(from_dict(data)) == data
    assert config_hash(data) == config_hash(to_dict(load_config(overrides=["seed=7"])))
    assert config_hash(data) != config_hash(to_dict(load_config(overrides=["seed=8"])))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        # unknown key in a section: file, line 3 and the nearest valid key
        ("grpo:\n  lr: 1.0e-6\n  group_sise: 4\n", r"exp\.yaml:3: unknown config key 'grpo\.group_sise'; did you mean grpo\.group_size"),
        # unknown top-level section
        ("grpoo:\n  lr: 1\n", r"exp\.yaml:1: unknown config key 'grpoo'"),
        # wrong type, with its line
        ("seed: 1\ngrpo:\n  group_size: many\n", r"exp\.yaml:3: bad value for 'grpo\.group_size'"),
        # wrong type inside a list item: the full key and its line
        ("phases:\n  - name: a\n    max_response_length: 10\n  - name: b\n    max_response_length: lots\n",
         r"exp\.yaml:5: bad value for 'phases\.1\.max_response_length'"),
        # bad YAML syntax: file and line
        ("grpo:\n  lr: [1\n", r"exp\.yaml:\d+: invalid YAML"),
        # a list at the top level
        ("- 1\n- 2\n", r"expected a mapping"),
    ],
)  # fmt: skip
def test_bad_yaml_names_file_line_and_key(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("grpo.lrr=1", r"unknown config key 'grpo\.lrr'; did you mean grpo\.lr"),  # typo, nearest key
        ("grpo.lr=fast", r"bad value for 'grpo\.lr'"),  # wrong type
        ("seed", r"is not key=value"),  # no '='
        ("phases.5.name=x", r"'phases' has 2 entries"),  # list index out of range
        ("data.crl_ratio=1.5", r"data\.crl_ratio: 1\.5 is outside \[0, 1\]"),  # range
        ("grpo.mini_batch_size=100", r"grpo\.mini_batch_size: 100 does not divide"),  # batch into groups
        ("phases=[]", r"phases: the phase list is empty"),  # empty phases
        ("model.dtype=int8", r"model\.dtype: 'int8' is not one of"),  # choice
        ("grpo.group_size=1", r"grpo\.group_size: 1 is outside"),  # GRPO needs a group
        ("switch.policy=fixed", r"switch\.at_steps: the fixed policy needs 1 step"),  # fixed without steps
        ("phases.0.scale_on=loss", r"phases\.0\.scale_on: 'loss' is not one of"),  # choice in a list item
    ],
)
def test_bad_overrides(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_nearest_keys_and_schema_keys() -> None:
    keys = schema_keys()
    assert "grpo.clip_high" in keys and "phases.N.crl_reward_scale" in keys
    assert nearest_keys("grpo.cliphigh")[0] == "grpo.clip_high"
    assert nearest_keys("phases.0.scal_on")[0] == "phases.N.scale_on"


def test_warning_when_a_reward_scale_would_cancel_out() -> None:
    quiet = load_config()
    assert config_warnings(quiet) == []
    noisy = load_config(overrides=["phases.0.scale_on=rewards"])
    (warning,) = config_warnings(noisy)
    assert "cancels out" in warning and "phases.0" in warning
    # without std normalisation the scale does act on the update: no warning
    assert (
        config_warnings(load_config(overrides=["phases.0.scale_on=rewards", "grpo.norm_adv_by_std=false"]))
        == []
    )


def test_a_plateau_switch_on_the_rl_reward_warns_when_no_prompt_is_rl() -> None:
    def warned(*overrides: str) -> bool:
        cfg = load_config(REPO / "experiments/tiny_coder.yaml", list(overrides))
        return any("the phase never switches" in w for w in config_warnings(cfg))

    rl = "switch.metric=reward/rl_mean"
    assert warned("data.crl_ratio=1.0", rl)
    assert not warned("data.crl_ratio=0.5", rl)
    assert not warned("data.crl_ratio=1.0", "switch.metric=reward/crl_mean")
    assert not warned("data.crl_ratio=1.0")  # switch.metric: auto watches reward/crl_mean there
    fresh = config_warnings(
        load_config(REPO / "experiments/tiny_coder.yaml", ["data.crl_ratio=1.0", "switch.restart=fresh", rl])
    )
    assert any("switches only when its data pass ends" in w for w in fresh)

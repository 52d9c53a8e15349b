"""Sweep specs: grid x variants x seeds, stable cell keys, bad specs named by file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlab.errors import ConfigError
from crlab.sweeps.spec import expand, load_spec

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text("name: base\nmodel:\n  path: tiny://coder\n")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_grid_cross_product_times_seeds(tmp_path: Path) -> None:
    spec = load_spec(
        _spec(
            tmp_path,
            "base: base.yaml\ngrid:\n  data.crl_ratio: [0.0, 0.5]\n  grpo.lr: [1.0e-6, 2.0e-6]\nseeds: [0, 1]\n",
        )
    )
    cells = expand(spec)
    assert len(cells) == 2 * 2 * 2
    assert len({c.key for c in cells}) == 8  # every cell distinct
    assert {(c.config["data"]["crl_ratio"], c.config["grpo"]["lr"], c.config["seed"]) for c in cells} == {
        (r, lr, s) for r in (0.0, 0.5) for lr in (1e-6, 2e-6) for s in (0, 1)
    }


def test_cell_keys_are_stable_across_loads(tmp_path: Path) -> None:
    path = _spec(tmp_path, "base: base.yaml\ngrid:\n  data.crl_ratio: [0.0, 0.5]\n")
    assert [c.key for c in expand(load_spec(path))] == [c.key for c in expand(load_spec(path))]


def test_variants_and_fixed_overrides(tmp_path: Path) -> None:
    text = (
        "base: base.yaml\noverrides:\n  grpo.max_steps: 7\n"
        "variants:\n  - {switch.policy: never}\n  - {switch.policy: fixed, switch.at_steps: [3]}\n"
    )
    cells = expand(load_spec(_spec(tmp_path, text)))
    assert [c.config["switch"]["policy"] for c in cells] == ["never", "fixed"]
    assert all(c.config["grpo"]["max_steps"] == 7 for c in cells)
    assert cells[1].label == "switch.policy=fixed switch.at_steps=[3] seed=0"


@pytest.mark.parametrize("name", ["crl_ratio", "reward_scale", "context_switch", "crl_search"])
def test_shipped_sweeps_expand(name: str) -> None:
    cells = expand(load_spec(REPO / "sweeps" / f"{name}.yaml"))
    assert cells and all(c.config["model"]["path"] == "tiny://coder" for c in cells)


def test_crl_ratio_sweep_is_table_5() -> None:
    cells = expand(load_spec(REPO / "sweeps/crl_ratio.yaml"))
    assert [(c.config["data"]["crl_ratio"], c.seed) for c in cells] == [
        (r, s) for r in (0.0, 0.2, 0.5, 1.0) for s in (0, 1, 2)
    ]  # three seeds: the last table's intervals and paired tests
    assert cells[4].run_name == "crl_ratio=0.2 s1"  # the run's (and W&B's) name
    paper = expand(
        load_spec(REPO / "sweeps/crl_ratio.yaml", [f"base={REPO}/experiments/critique_coder_qwen3_4b.yaml"])
    )
    assert all(c.config["model"]["path"] == "Qwen/Qwen3-4B" for c in paper)
    assert {c.key for c in paper}.isdisjoint({c.key for c in cells})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("base: base.yaml\ngrid:\n  grpo.lrr: [1]\n", r"s\.yaml:3: key 'grpo\.lrr' is not in the config schema; did you mean grpo\.lr"),  # typo
        ("base: base.yaml\ngrid: {}\n", r"s\.yaml:2: the grid is empty"),  # empty grid
        ("base: base.yaml\ngrid:\n  grpo.lr: []\n", r"needs a non-empty list"),  # empty values
        ("base: base.yaml\ngrid:\n  grpo.group_size: [two]\n", r"cell \[grpo\.group_size=two seed=0\]: bad value"),  # wrong type
        ("base: nope.yaml\ngrid:\n  grpo.lr: [1]\n", r"s\.yaml:1: base experiment 'nope\.yaml' does not exist"),  # missing base
        ("grid:\n  grpo.lr: [1]\n", r"no 'base' experiment"),  # no base
        ("base: base.yaml\ngird:\n  grpo.lr: [1]\n", r"s\.yaml:2: unknown sweep key 'gird'"),  # unknown spec key
        ("base: base.yaml\ngrid:\n  grpo.lr: [1]\nseeds: 3\n", r"seeds must be a non-empty list"),  # bad seeds
    ],
)  # fmt: skip
def test_bad_specs(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        expand(load_spec(_spec(tmp_path, text)))

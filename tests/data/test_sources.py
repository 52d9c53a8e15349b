"""The table of sources: every kind resolves, loads problems that name their kind, and records provenance;
an unknown source names itself and every valid form; a kind added to the table is read everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crlab.config import load_config
from crlab.data import sources
from crlab.data.problems import Problem
from crlab.data.sources import SOURCES, Provenance, SamplesFormat, SourceKind, UnknownSource, named, resolve
from crlab.errors import ConfigError, CrlabError
from crlab.eval.samples import read_samples
from crlab.eval.scoring import resolve_scoring
from crlab.eval.sources import EvalInputError, load_eval_set
from crlab.provenance import data_provenance, source_provenance
from crlab.rewards.spec import TestSpec

REPO = Path(__file__).resolve().parents[2]
LCB = {
    "question_id": "q1",
    "question_content": "Print 3.",
    "public_test_cases": '[{"input": "", "output": "3\\n"}]',
}
RSTAR = {"question": "Print 3.", "inputs": [""], "outputs": ["3\n"]}
ROWS = {"problem_id": "q1", "question": "Print 3.", "solution": "print(3)", "label": True}


def _example(form: str, files: dict[str, Path]) -> str:
    """A concrete source of a written form: N -> 3, a path -> a file of that kind's rows."""
    text = form.split(" (")[0].replace("[:N]", ":3").replace(":N", ":3")
    if text.startswith("crl:"):
        return f"crl:{files['crl']}" if "FILE" in text else "crl:tiny-eval:3"
    name = text.partition(":")[0]
    return text.replace("/path.jsonl", str(files.get(name, files["livecodebench"])))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, row in (("livecodebench", LCB), ("rstar", RSTAR), ("crl", ROWS)):
        made[name] = tmp_path / f"{name}.jsonl"
        made[name].write_text(json.dumps(row) + "\n")
    return made


def test_every_written_form_resolves_to_its_kind_and_records_provenance(files: dict[str, Path]) -> None:
    for kind in SOURCES.values():
        assert kind.forms and kind.title and (kind.provenance.generator or kind.provenance.data_file)
        for form in kind.forms:
            source = _example(form, files)
            assert resolve(source)[0] is kind, (form, source)
            made = source_provenance(source)
            assert made["source"] == source and (made.get("generator") or made.get("sha256")), made
            if kind.provenance.generator:  # a generated source names its generator and version
                assert (made["generator"], bool(made["version"])) == (kind.provenance.generator, True)


def test_every_problem_kind_loads_problems_that_name_their_kind(files: dict[str, Path]) -> None:
    for kind in SOURCES.values():
        if kind.critique or kind.name == "humaneval":  # humaneval: 164 problems, loaded in test_formats
            continue
        source = _example(kind.forms[0], files)
        problems = sources.load_problems(source)
        assert problems and all(p.source in SOURCES for p in problems), source
        if kind.name != "jsonl":  # a guessed file's problems name the format guessed
            assert {sources.kind_of(p).name for p in problems} <= {kind.name, "tiny"}
        assert resolve_scoring("auto", problems) == sources.kind_of(problems[0]).scorings[0]


def test_an_unknown_source_names_itself_and_every_valid_form() -> None:
    with pytest.raises(ConfigError) as err:
        resolve("mbpp:x")
    assert err.value.message.startswith("unknown source 'mbpp:x'; valid forms: tiny; tiny:N; ")
    assert all(form in err.value.message for kind in SOURCES.values() for form in kind.forms)
    with pytest.raises(UnknownSource, match="unknown problem source 'crl:rows.jsonl'") as err:
        sources.load_problems("crl:rows.jsonl")  # a critique set is not a problem source
    assert "crl:SOURCE" not in str(err.value)
    with pytest.raises(ConfigError, match=r"data\.rl_source: unknown problem source 'mbpp'; valid forms"):
        load_config(overrides=["data.rl_source=mbpp"])
    with pytest.raises(ConfigError, match=r"eval\.crl_source: unknown problem source 'mbpp'"):
        load_config(overrides=["eval.source=tiny-eval", "eval.crl_source=mbpp"])
    with pytest.raises(EvalInputError, match=r"--on 'mbpp': unknown source 'mbpp'; valid forms: tiny"):
        load_eval_set("mbpp")
    assert str(source_provenance("mbpp")) == "{'source': 'mbpp', 'generator': None, 'version': None}"


def test_livecodebench_scoring_and_date_windows_follow_the_table() -> None:
    with pytest.raises(
        ConfigError, match="eval.scoring: livecodebench scores LiveCodeBench sources, not 'tiny-val'"
    ):
        load_config(overrides=["eval.source=tiny-val", "eval.scoring=livecodebench"])
    with pytest.raises(
        ConfigError, match="eval.since: a contest_date window needs eval.source: livecodebench:FILE"
    ):
        load_config(overrides=["eval.source=rstar:x.jsonl", "eval.since=2024-08-01"])
    assert load_config(overrides=["eval.source=livecodebench:x.jsonl", "eval.scoring=livecodebench"])


def _toy(count: str, seed: int) -> list[Problem]:
    spec = TestSpec(kind="stdin", inputs=("",), outputs=("7\n",))
    return [
        Problem(id=f"toy-{i}", question="Print 7.", spec=spec, source="toy") for i in range(int(count or 2))
    ]


@pytest.fixture
def table():
    saved = dict(SOURCES)
    yield SOURCES
    SOURCES.clear()
    SOURCES.update(saved)


def test_a_kind_added_to_the_table_is_read_everywhere(table: dict, tmp_path: Path) -> None:
    """One entry and its loader, nothing else: config checks, loading, eval sets, samples, scoring and
    provenance all take the new kind."""
    sources.register(SourceKind(
        "toy", "Toy", ("toy[:N]",), named("toy", "optional"), _toy, Provenance(generator="crlab"),
        samples=SamplesFormat("task_id", "completion", "code", listed=False),
    ))  # fmt: skip
    assert list(table)[-1] == "jsonl"  # a guessed path still matches last
    cfg = load_config(
        REPO / "experiments/tiny_coder.yaml", ["data.rl_source=toy:3", "eval.source=toy", "seed=1"]
    )
    assert [p.id for p in sources.load_problems(cfg.data.rl_source)] == ["toy-0", "toy-1", "toy-2"]
    assert data_provenance(cfg)["data.rl_source"]["generator"] == "crlab"
    found = load_eval_set("toy:4")
    assert (found.kind, len(found), resolve_scoring("auto", found.problems)) == ("code", 4, "strict")
    with pytest.raises(CrlabError, match="scores LiveCodeBench problems only, not toy"):
        resolve_scoring("livecodebench", found.problems)
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "toy-1", "completion": "print(7)"}) + "\n")
    assert read_samples(str(samples), found.problems) == ("code", {"toy-1": ["print(7)"]})
    with pytest.raises(ValueError, match="'toy' is in the table already"):
        sources.register(table["toy"])

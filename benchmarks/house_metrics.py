"""Two measures of how typed the house is, counted over ``platform/crlab`` from its syntax trees.

1. **Config parameters typed ``Any``**: function parameters annotated ``Any`` or ``DictConfig`` (or not at
   all) whose name says they receive a config object (``cfg``, ``config``, ``*_cfg``, ``*_config``, ``phase``,
   ``section``, ``ev``, ``sw``, ``switch``), beside the count of all ``Any`` parameters. ``config_compose.py``
   is left out: it composes the config with OmegaConf, so its functions take the ``DictConfig`` being built.
2. **String-literal comparisons for a choice or a state**: ``==``, ``!=``, ``in`` and ``not in`` whose one side
   is a string literal (or a tuple, list or set of them) and whose other side names a config choice
   (an attribute or variable whose name is a key of ``crlab.config_checks.CHOICES``, such as
   ``cfg.reward.isolation`` or ``agg``) or a state (``status``, ``outcome``, ``result``, ``state``), beside
   the count of all string-literal comparisons (most compare parsed text, which is not a state).
   Comparisons inside a class deriving from ``Enum`` or ``StrEnum`` are its definition and are not counted.

    python benchmarks/house_metrics.py [--root platform/crlab] [--list]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

COMPOSING = "config_compose.py"  # where the DictConfig is built, before it becomes the schema's dataclasses
CONFIG_NAMES = {"cfg", "config", "phase", "section", "ev", "sw", "switch"}
STATE_NAMES = {"status", "outcome", "result", "state", "kind"}
CHOICE_NAMES = {
    "dtype", "loss_agg", "agg", "micro_weight", "warmup_unit", "dapo_quota", "engine", "code_mode", "mode",
    "code_extraction", "extraction", "conclusion_parse", "parse", "overlong_prompts", "crl_prompt", "budget",
    "crl_mix", "single_sample_advantage", "isolation", "scoring", "harness", "policy", "rule", "restart",
    "precision", "advantage", "estimator",
}


def _is_config_name(name: str) -> bool:
    return name in CONFIG_NAMES or name.endswith(("_cfg", "_config"))


def _names(node: ast.expr) -> set[str]:
    """The last name of an attribute chain or a variable (``cfg.reward.isolation`` -> {"isolation"})."""
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return {a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return set()


def _is_str_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts)
    return False


def _enum_classes(tree: ast.Module) -> list[ast.ClassDef]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
            if bases & {"Enum", "StrEnum", "IntEnum"}:
                out.append(node)
    return out


def _comparisons(tree: ast.Module) -> tuple[int, list[ast.Compare]]:
    inside_enum = {id(n) for c in _enum_classes(tree) for n in ast.walk(c)}
    total, states = 0, []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or id(node) in inside_enum:
            continue
        if not all(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        literal = [s for s in sides if _is_str_literal(s)]
        if not literal:
            continue
        total += 1
        other = set().union(*(_names(s) for s in sides if not _is_str_literal(s)))
        if other & (CHOICE_NAMES | STATE_NAMES):
            states.append(node)
    return total, states


def _any_params(tree: ast.Module) -> tuple[int, list[tuple[str, int]]]:
    total, configs = 0, []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            ann = arg.annotation
            is_any = ann is None or (isinstance(ann, ast.Name) and ann.id in ("Any", "DictConfig")) or (
                isinstance(ann, ast.Constant) and ann.value == "Any")
            if ann is not None and is_any:
                total += 1
            if is_any and arg.arg not in {"self", "cls"} and _is_config_name(arg.arg):
                configs.append((arg.arg, node.lineno))
    return total, configs


def measure(root: Path) -> dict:
    out = {"any_params": 0, "config_any_params": [], "str_comparisons": 0, "state_comparisons": []}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(root.parent)
        n_any, cfgs = _any_params(tree)
        cfgs = [] if path.name == COMPOSING else cfgs
        out["any_params"] += n_any
        out["config_any_params"] += [f"{rel}:{line} {name}" for name, line in cfgs]
        n_cmp, states = _comparisons(tree)
        out["str_comparisons"] += n_cmp
        out["state_comparisons"] += [f"{rel}:{c.lineno} {ast.unparse(c)}" for c in states]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "platform" / "crlab"))
    parser.add_argument("--list", action="store_true", help="list each counted place")
    args = parser.parse_args()
    m = measure(Path(args.root))
    print("| measure | count |\n|---|---|")
    print(f"| parameters annotated Any (all) | {m['any_params']} |")
    print(f"| config parameters typed Any or untyped | {len(m['config_any_params'])} |")
    print(f"| string-literal comparisons (all) | {m['str_comparisons']} |")
    print(f"| string-literal comparisons of a choice or state | {len(m['state_comparisons'])} |")
    if args.list:
        for line in m["config_any_params"] + m["state_comparisons"]:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

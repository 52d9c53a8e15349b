"""The house's layering, read from the source: no import cycle among crlab's modules (imports inside
functions included, since a lazy import is still a dependency), and the lower layers never import the
higher ones (DESIGN.md: rewards, data, eval and the GRPO algorithm know nothing of the registry, the sweeps
or the command line)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "crlab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only; never imported at run time)."""
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}  # fmt: skip
    return [n for n in ast.walk(tree) if id(n) not in typing_only]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each crlab module -> the crlab modules it imports anywhere in its body (in functions too)."""
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from crlab.train import grpo` imports the module crlab.train.grpo
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names}  # fmt: skip
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_crlab_modules() -> None:
    graph = import_graph()
    assert "crlab.config" in graph and "crlab.train.loop.trainer" in graph  # the walk saw the house
    assert cycles(graph) == []


LOWER = ("crlab.rewards", "crlab.data", "crlab.eval", "crlab.train.grpo")
HIGHER = ("crlab.registry", "crlab.sweeps", "crlab.cli")


@pytest.mark.parametrize("lower", LOWER)
def test_lower_layers_import_no_higher_one(lower: str) -> None:
    graph = import_graph()
    bad = sorted(f"{m} -> {d}" for m, deps in graph.items() if m.startswith(lower)
                 for d in deps if d.startswith(HIGHER))  # fmt: skip
    assert bad == []


def _house_metrics():  # noqa: ANN202
    import importlib.util

    path = PACKAGE.parents[1] / "benchmarks" / "house_metrics.py"
    spec = importlib.util.spec_from_file_location("house_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_configs_are_typed_and_choices_are_enums() -> None:
    """No parameter that receives a config is typed Any, and no choice or state is compared with a string
    literal (benchmarks/house_metrics.py counts both; it prints the counts with --list)."""
    measured = _house_metrics().measure(PACKAGE)
    assert measured["config_any_params"] == []
    assert measured["state_comparisons"] == []


def test_the_measure_sees_what_it_counts(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "from typing import Any\nclass Mode(StrEnum):\n    A = 'a'\n    def f(self):\n        return self.mode == 'a'\n"
        "def g(cfg: Any, grpo_cfg, text: str) -> bool:\n    return cfg.reward.isolation == 'bwrap' or text == 'x'\n"
    )  # fmt: skip
    measured = _house_metrics().measure(tmp_path)
    assert [line.split()[1] for line in measured["config_any_params"]] == ["cfg", "grpo_cfg"]
    assert len(measured["state_comparisons"]) == 1 and measured["str_comparisons"] == 2

"""The registry has one write path per kind of row: no public method of ``Registry`` writes what the
product never writes through it. A run's metrics, checkpoints and best flag go through its journal
(``crlab.registry.journal.apply_records``); a write method that only tests call would let them check a path
production never takes (tests write through ``tests/registry/recording.py`` instead)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import crlab
from crlab.registry import db, store
from crlab.registry.store import Registry
from crlab.registry.summaries import write_metrics

PRODUCT = Path(crlab.__file__).parent
SESSION_WRITES = {"add", "add_all", "delete", "merge", "bulk_save_objects", "bulk_insert_mappings"}
SQL_WRITES = {"setattr", "insert", "update", "delete"}  # setattr on a row; SQLAlchemy's DML constructs


def _writes(fn: Callable, seen: set[str]) -> bool:
    """Whether ``fn`` writes to the database: a session add/delete, a DML statement, an attribute set on a
    row, or a call of a registry method or helper function that does (followed through this package)."""
    fn = inspect.unwrap(fn)
    if fn.__qualname__ in seen:
        return False
    seen.add(fn.__qualname__)
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    names = {**vars(inspect.getmodule(fn)), **_local_imports(tree)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_sets_attribute(t) for t in targets):
                return True
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in SESSION_WRITES:
            return True
        if isinstance(func, ast.Name) and func.id in SQL_WRITES:
            return True
        callee = None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = Registry if func.value.id == "self" else names.get(func.value.id)
            callee = getattr(owner, func.attr, None)  # self.method(...), or module.function(...)
        elif isinstance(func, ast.Name):
            callee = names.get(func.id)
        follow = inspect.isfunction(callee) and callee.__module__.startswith("crlab.registry")
        if follow and _writes(callee, seen):
            return True
    return False


def _local_imports(tree: ast.AST) -> dict[str, object]:
    """What ``from crlab... import name`` statements inside a function bind."""
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crlab"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                found[alias.asname or alias.name] = getattr(module, alias.name, None)
    return found


def _sets_attribute(target: ast.expr) -> bool:
    if isinstance(target, ast.Attribute):
        return not (isinstance(target.value, ast.Name) and target.value.id == "self")
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_sets_attribute(t) for t in target.elts)
    return False


def write_methods() -> list[str]:
    return sorted(
        name
        for name, member in vars(Registry).items()
        if inspect.isfunction(member) and not name.startswith("_") and _writes(member, set())
    )


def product_calls(name: str) -> list[str]:
    """Where the product calls ``.name(``, its own definition aside."""
    call = re.compile(rf"\.{re.escape(name)}\(")
    found = []
    for path in sorted(PRODUCT.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if call.search(line) and not line.lstrip().startswith(f"def {name}("):
                found.append(f"{path.relative_to(PRODUCT)}:{number}")
    return found


def unused_write_methods() -> list[str]:
    return [name for name in write_methods() if not product_calls(name)]


def _log_metrics(self: Registry, run_id: str, step: int, values: dict[str, float]) -> None:
    """A second write path of the kind the registry once had (metrics written outside the journal)."""
    with db.session_scope(self.engine) as s:
        write_metrics(s, run_id, step, values, store.utcnow())


def test_the_write_detection_sees_writes_and_only_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check below is only as good as this classification: it must tell known writers from readers,
    and catch a write method that comes back."""
    writes = write_methods()
    for name in ("create_run", "update_run", "start_attempt", "finish_run", "heartbeat", "log_event"):
        assert name in writes, (name, writes)
    for name in ("get_run", "list_runs", "metrics", "latest_metrics_of", "checkpoints", "best_checkpoint"):
        assert name not in writes, (name, writes)
    assert product_calls("start_attempt") and not product_calls("no_such_method")
    monkeypatch.setattr(Registry, "log_metrics", _log_metrics, raising=False)
    assert unused_write_methods() == ["log_metrics"]


def test_every_public_write_method_of_the_registry_has_a_caller_in_the_product() -> None:
    unused = unused_write_methods()
    assert not unused, (
        f"Registry write method(s) {unused} have no caller in the product: a second write path that only "
        "tests take. Remove them; tests write as a run does (tests/registry/recording.py)."
    )

"""How the tests themselves are laid out: helpers come from ``tests/support/`` only, and tests
use the public surface of the code, not its private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.support.paths import REPO_ROOT

TESTS = REPO_ROOT / "tests"

# Owned by the engine split, which moves their fakes to tests/support/engine_fakes.py and their
# private reads to the public surface; drop them from this set once that has landed.
ENGINE_SPLIT = {"tests/unit/test_engine.py", "tests/unit/test_template_holds.py"}
# Private names read on purpose, not of the app, the sender or the Kafka wrappers.
PRIVATE_ON_PURPOSE = {
    "tests/unit/test_ordering.py": "white-box: a closed lane of the pure table leaves nothing",
    "tests/unit/test_devbroker_selection.py": "pure helpers of the development broker launcher",
    "tests/unit/test_event_intake_bounds.py": "aiohttp's own header writers: what aiohttp refuses",
}


def python_files() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(TESTS.rglob("*.py")):
        name = path.relative_to(REPO_ROOT).as_posix()
        yield name, ast.parse(path.read_text(encoding="utf-8"), filename=name)


def imported_test_modules(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: always a sibling test module or conftest
                yield "." * node.level + (node.module or "")
            elif node.module and node.module.split(".")[0] == "tests":
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "tests")


def test_helpers_are_imported_only_from_tests_support() -> None:
    found = [
        f"{name} imports {module}"
        for name, tree in python_files()
        if name not in ENGINE_SPLIT
        for module in imported_test_modules(tree)
        if not module.startswith("tests.support")
    ]
    assert found == []


def test_no_test_reads_a_private_name() -> None:
    found = [
        f"{name}:{node.lineno} reads .{node.attr}"
        for name, tree in python_files()
        if name not in ENGINE_SPLIT and name not in PRIVATE_ON_PURPOSE
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
    ]
    found += [
        f"{name}:{node.lineno} imports {alias.name} from {node.module}"
        for name, tree in python_files()
        if name not in ENGINE_SPLIT and name not in PRIVATE_ON_PURPOSE
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert found == []


def test_conftest_files_hold_only_fixtures() -> None:
    found = [
        f"{name}:{node.lineno} {node.name}"
        for name, tree in python_files()
        if name.endswith("/conftest.py")
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not any("fixture" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert found == []

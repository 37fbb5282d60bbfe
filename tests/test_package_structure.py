"""The package's layout keeps its promises: short modules, every package import at module level, no
import cycle (so no import needs hiding inside a function), and no module reaching for another's
private names."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mtl_helpers"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_LINES = 400


def package_imports(node: ast.AST, module: str) -> list[tuple[str, list[str]]]:
    """(imported package module, names) of an import statement that names this package, else []."""
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            target = node.module or ""
        elif node.module and node.module.split(".")[0] == "mtl_helpers":
            target = node.module.partition(".")[2]
        else:
            return []
        names = [a.name for a in node.names]
        if not target:  # `from . import x`: the modules themselves
            return [(n, []) for n in names]
        return [(target.split(".")[0], names)]
    if isinstance(node, ast.Import):
        return [(a.name.split(".")[1], []) for a in node.names if a.name.startswith("mtl_helpers.")]
    return []


def is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def module_level_imports(tree: ast.Module, module: str) -> dict[str, list[str]]:
    """Package modules imported at run time by statements at module level (type-only ones left out)."""
    out: dict[str, list[str]] = {}
    for node in tree.body:
        statements = [node]
        if isinstance(node, (ast.If, ast.Try)) and not is_type_checking(node):
            statements = list(ast.walk(node))
        for statement in statements:
            for target, names in package_imports(statement, module):
                out.setdefault(target, []).extend(names)
    return out


def parsed() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_module_is_longer_than_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by job (at most {MAX_LINES})"


def test_no_package_import_inside_a_function():
    hidden = []
    for module, tree in parsed().items():
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if package_imports(node, module):
                        hidden.append(f"{module}.{function.name} (line {node.lineno})")
    assert not hidden, f"package imports inside functions: {hidden}"


def test_the_import_graph_has_no_cycle():
    graph = {module: set(module_level_imports(tree, module)) - {module} for module, tree in parsed().items()}
    unknown = {t for targets in graph.values() for t in targets} - set(graph)
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"
    order, done, visiting = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = visiting[visiting.index(module) :] + [module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)
        order.append(module)

    for module in sorted(graph):
        visit(module)
    assert len(order) == len(graph)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check above can fail: two modules importing each other are reported as a cycle."""
    a = ast.parse("from .b import thing\n")
    b = ast.parse("from .a import other\n")
    graph = {"a": set(module_level_imports(a, "a")), "b": set(module_level_imports(b, "b"))}
    assert graph == {"a": {"b"}, "b": {"a"}}


def test_no_module_imports_another_modules_private_names():
    private = []
    for module, tree in parsed().items():
        for node in ast.walk(tree):
            for target, names in package_imports(node, module):
                private += [f"{module} imports {target}.{n}" for n in names if n.startswith("_")]
    assert not private, private


def test_the_version_is_written_once():
    """pyproject.toml reads the version from the package, so the two cannot disagree. (Read with tomllib:
    importing setuptools after another test imported distutils trips setuptools' distutils shim.)"""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import mtl_helpers

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in config["project"]["dynamic"] and "version" not in config["project"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mtl_helpers.__version__"}
    assert importlib.metadata.version("mtl-helpers") == mtl_helpers.__version__  # what pip installed from it

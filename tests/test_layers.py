"""The package's layering: pure layers import without Trio, nothing imports upward, no cycles.

Layers, low to high (a module may import its own layer and those below):
the package itself, `messages`, `counters`; `protocol`, `hashing`; `routing`;
`config`; `transport`, `tls`; `upstream`; `ops`; `downstream`; `cli`, `__main__`.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

PACKAGE = "mcrouter_trio"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "messages", "counters"),
    ("protocol", "hashing"),
    ("routing",),
    ("config",),
    ("transport", "tls"),
    ("upstream",),
    ("ops",),
    ("downstream",),
    ("cli", "__main__"),
)
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}

PURE = [
    "mcrouter_trio.messages",
    "mcrouter_trio.counters",
    "mcrouter_trio.protocol",
    "mcrouter_trio.hashing",
    "mcrouter_trio.routing",
    "mcrouter_trio.routing.testing",
    "mcrouter_trio.config",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_packages_import_without_trio(module: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['trio'] = None  # any import of Trio now fails\n"
        f"import {module}\n"
        "from mcrouter_trio.routing import load_handles\n"
        "assert 'PoolRoute' in load_handles()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_importing_trio_is_really_refused_in_that_check() -> None:
    code = "import sys\nsys.modules['trio'] = None\nimport mcrouter_trio.downstream\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0 and "trio" in done.stderr


@attrs.frozen
class Import:
    importer: str
    imported: str
    line: int
    #: Executed when the importer is imported (not in a function, not for type checking).
    at_import_time: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> list[Import]:
    """Every import of a package module in `path`, wherever it is written."""
    name = module_name(path)
    package = package_of(name, path)
    found: list[Import] = []

    def add(target: str, line: int, at_import_time: bool) -> None:
        if target == PACKAGE or target.startswith(PACKAGE + "."):
            found.append(Import(name, target, line, at_import_time))

    def visit(node: ast.AST, at_import_time: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, at_import_time)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import submodule` imports the submodule.
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source, node.lineno, at_import_time)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.iter_child_nodes(node):
                visit(child, False)
            return
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, at_import_time)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, at_import_time)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def all_imports() -> tuple[set[str], list[Import]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return modules, [found for path in paths for found in imports_of(path, modules)]


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYER_OF:
        raise AssertionError(f"{module} is in no layer: add {top!r} to LAYERS in {__file__}")
    return LAYER_OF[top]


def describe(level: int) -> str:
    return "/".join(part or PACKAGE for part in LAYERS[level])


def test_the_import_reader_sees_every_kind_of_import() -> None:
    modules, imports = all_imports()
    assert "mcrouter_trio.routing.handles.hash" in modules
    seen = {(i.importer, i.imported) for i in imports}
    # Absolute `from x import y` of a module, and of a name in a package.
    assert ("mcrouter_trio.routing._tree", "mcrouter_trio.routing.handles.broadcast") in seen
    assert ("mcrouter_trio.downstream._router", "mcrouter_trio") in seen
    # Relative imports.
    assert ("mcrouter_trio.hashing", "mcrouter_trio.hashing._furc") in seen


def test_no_module_imports_a_higher_layer() -> None:
    _modules, imports = all_imports()
    upward = [
        f"{i.importer} ({describe(layer(i.importer))}) imports {i.imported} "
        f"({describe(layer(i.imported))}) at line {i.line}"
        for i in imports
        if layer(i.imported) > layer(i.importer)
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` (as a path that ends where it starts), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
                on_path.add(child)
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycles_at_import_time() -> None:
    _modules, imports = all_imports()
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for i in imports:
        if i.at_import_time and i.imported != i.importer:
            graph.setdefault(i.importer, set()).add(i.imported)
            lines.setdefault((i.importer, i.imported), i.line)
    cycle = find_cycle(graph)
    if cycle is not None:
        steps = [f"{a} imports {b} at line {lines[a, b]}" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle:\n" + "\n".join(steps))

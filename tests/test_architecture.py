"""The package's shape, read from its source with `ast` (nothing is imported): no import cycles between its modules,
Hydra and OmegaConf only at the command edge (commands/ and cli.py), and modules and functions of a readable size.

An import counts wherever it is written (at module level or inside a function: both run), relative or absolute;
`from pkg import name` is an edge to pkg, and to pkg.name too when that is a module. Imports under
`if TYPE_CHECKING:` never run and do not count.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path
from typing import Iterator

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imgcls_cli"
EDGE = ("imgcls_cli.cli", "imgcls_cli.commands")  # the modules that may import Hydra and OmegaConf
# The top: argv dispatch, the Hydra apps and `imgcls list`. They import the engine, data and models; never the reverse.
TOP = (*EDGE, "imgcls_cli.__main__", "imgcls_cli.listing", "imgcls_cli.api")  # api runs the commands in-process
CONFIG_LIBRARIES = {"hydra", "omegaconf"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


class Module:
    """One .py file of a package: its dotted name, line count, imports and functions (read in one pass)."""

    def __init__(self, root: Path, path: Path) -> None:
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        is_package = path.name == "__init__.py"
        self.name = ".".join(parts[:-1] if is_package else parts)
        self.path = path
        text = path.read_text(encoding="utf-8")
        self.lines = len(text.splitlines())
        package = self.name if is_package else self.name.rpartition(".")[0]
        self.imports: list[tuple[int, str, list[str]]] = []  # (line, absolute module, names) of each import that runs
        self.functions: list[tuple[str, int, int]] = []  # (name, first line, lines)
        for node in _runnable_nodes(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                self.imports += [(node.lineno, alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                self.imports.append((node.lineno, target, [alias.name for alias in node.names]))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.append((node.name, node.lineno, node.end_lineno - node.lineno + 1))  # type: ignore[operator]


def _runnable_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, leaving out the bodies of `if TYPE_CHECKING:` (their `else:` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def load_package(root: Path) -> dict[str, Module]:
    modules = [Module(root, path) for path in sorted(root.rglob("*.py"))]
    return {m.name: m for m in modules}


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (itself left out)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for _, target, names in module.imports:
            targets = [target, *(f"{target}.{n}" for n in names)]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one module, as [a, b, ..., a]."""
    found = []
    for component in _components(graph):
        if len(component) > 1:
            start = min(component)
            found.append(_shortest_cycle(graph, start, component))
    return sorted(found)


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
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
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _shortest_cycle(graph: dict[str, set[str]], start: str, component: set[str]) -> list[str]:
    """The shortest path from start back to start inside component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & component):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def config_library_imports(modules: dict[str, Module]) -> list[str]:
    """'module:line imports hydra...' for each module outside the command edge that imports Hydra or OmegaConf."""
    return [f"{name}:{line} imports {target}" for name, module in sorted(modules.items()) if not _within(name, EDGE)
            for line, target, _ in sorted(module.imports) if target.split(".")[0] in CONFIG_LIBRARIES]


def imports_of_the_top(modules: dict[str, Module]) -> list[str]:
    """'module:line imports imgcls_cli.cli' for each module below the top (TOP) that imports one of the top's."""
    return [f"{name}:{line} imports {top}" for name, module in sorted(modules.items()) if not _within(name, TOP)
            for line, target, names in sorted(module.imports)
            for top in [target, *(f"{target}.{n}" for n in names)] if _within(top, TOP)]


def long_functions(modules: dict[str, Module], limit: int) -> list[str]:
    return sorted(f"{name}.{function} ({module.path.name}:{line}): {length} lines"
                  for name, module in modules.items() for function, line, length in module.functions if length > limit)


@pytest.fixture(scope="module")
def package() -> dict[str, Module]:
    return load_package(PACKAGE)


# ------------------------------------------------------------------------------------------- the checks themselves
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_function_level_relative_and_submodule_imports_is_found_and_named(tmp_path):
    pkg = _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "def f():\n    from .sub import b\n",  # function level, relative, `from package import module`
        "sub/__init__.py": "",
        "sub/b.py": "import pkg.c\n",
        "c.py": "from pkg import a as _a\n",
        "leaf.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        "d.py": "from pkg.leaf import x\n",
    })
    modules = load_package(pkg)
    assert cycles(import_graph(modules)) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    assert import_graph(modules)["pkg.leaf"] == set()  # TYPE_CHECKING imports never run
    assert import_graph(modules)["pkg.d"] == {"pkg.leaf"}


def test_hydra_outside_the_edge_an_import_of_the_cli_and_long_functions_are_named(tmp_path):
    pkg = _write(tmp_path / "imgcls_cli", {
        "__init__.py": "",
        "cli.py": "import hydra\n",
        "commands/__init__.py": "",
        "commands/train.py": "from omegaconf import OmegaConf\n",
        "engine/__init__.py": "",
        "engine/loop.py": "def fit():\n    from omegaconf import OmegaConf\n" + "    x = 1\n" * 80,
        "rundir.py": "def command():\n    from imgcls_cli import cli\n",
    })
    modules = load_package(pkg)
    assert config_library_imports(modules) == ["imgcls_cli.engine.loop:2 imports omegaconf"]
    assert imports_of_the_top(modules) == ["imgcls_cli.rundir:2 imports imgcls_cli.cli"]
    assert long_functions(modules, MAX_FUNCTION_LINES) == ["imgcls_cli.engine.loop.fit (loop.py:1): 82 lines"]


# ------------------------------------------------------------------------------------------- the package
def test_the_graph_holds_the_package_s_known_imports(package):
    graph = import_graph(package)
    assert "imgcls_cli.commands.overrides" in graph["imgcls_cli.cli"]  # imported inside a function
    assert "imgcls_cli.console" in graph["imgcls_cli.commands.sweep"]  # `from imgcls_cli import console`


def test_no_import_cycles(package):
    graph = import_graph(package)
    found = cycles(graph)
    tied = [sorted(c) for c in _components(graph) if len(c) > 2]  # more than the one cycle named may run through these
    assert not found, ("import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)
                       + "".join(f"\n  modules tied together: {', '.join(c)}" for c in tied))


def test_only_the_command_edge_imports_hydra_or_omegaconf(package):
    found = config_library_imports(package)
    assert not found, "only imgcls_cli/commands/ and imgcls_cli/cli.py import Hydra or OmegaConf:\n" + "\n".join(found)


def test_the_engine_data_and_models_never_import_the_commands_or_the_cli(package):
    found = imports_of_the_top(package)
    assert not found, "the command line's modules import the engine, never the reverse:\n" + "\n".join(found)


def test_no_module_over_400_lines(package):
    found = sorted(f"{m.path.relative_to(PACKAGE.parent)}: {m.lines} lines"
                   for m in package.values() if m.lines > MAX_MODULE_LINES)
    assert not found, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(found)


def test_no_function_over_80_lines(package):
    found = long_functions(package, MAX_FUNCTION_LINES)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(found)

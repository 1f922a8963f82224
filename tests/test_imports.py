"""The import graph of ``src/refinemask``: no cycle, and the library never imports the apps.

Every ``import`` statement counts, also those inside functions (imported late to keep the CLI
quick, they still tie two modules together) and under ``if TYPE_CHECKING:``. Importing a
module does not count as importing its parent packages, so that ``refinemask/__init__.py``
does not put every module on a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "refinemask"
# the library: what a user imports to build, train, evaluate, convert and export models
LIBRARY = ("modeling", "data", "engine", "evaluation", "convert", "export", "config", "errors", "jsonfile",
           "model_files", "overlay", "tensor_files", "typed_sections")
# the apps on top of it
APPS = ("demo", "demo_report", "predict_files", "serve", "cli", "commands")


def module_files(src: Path = SRC) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    modules = {}
    for path in sorted((src / ROOT).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports anywhere in its code."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # relative: level 1 is this module's package (a package's own name for __init__)
                package = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` binds a but runs a.b.c: the deepest module of the package that matches
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    modules = module_files(src)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) for each strongly connected group of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm; the graph has ~100 nodes, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_through(group, graph) for group in groups]


def _cycle_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the group's first module back to it, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & members):
                if succ == start:
                    return paths[node] + [start]
                if succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {group}")


def _in(module: str, parts: tuple[str, ...]) -> bool:
    return any(module == f"{ROOT}.{p}" or module.startswith(f"{ROOT}.{p}.") for p in parts)


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    # a module-level, a function-level and a relative-free `from pkg import module` import
    assert "refinemask.errors" in graph["refinemask.engine.train"]
    assert "refinemask.model_files" in graph["refinemask.engine.predict"]
    assert "refinemask.engine.distributed" in graph["refinemask.engine.train"]
    assert len(graph) > 50


def test_no_import_cycle_in_src():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between the package's parts: ``refinemask.engine.train`` is ``engine``."""
    def part(module: str) -> str:
        return module.split(".")[1] if "." in module else module

    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        parts.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    return parts


def test_no_import_cycle_between_the_parts_of_the_package():
    # e.g. engine -> convert -> engine through two different modules is no module cycle, but it
    # still means neither part can be understood, tested or moved without the other
    cycles = find_cycles(package_graph(import_graph()))
    assert not cycles, "cycles between parts: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_cycle_between_parts_is_found():
    graph = {"refinemask.a.x": {"refinemask.b.y"}, "refinemask.b.y": set(), "refinemask.b.z": {"refinemask.a.w"},
             "refinemask.a.w": set()}
    assert find_cycles(graph) == []  # no module cycle
    assert find_cycles(package_graph(graph)) == [["a", "b", "a"]]


def test_the_library_never_imports_the_apps():
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items() if _in(module, LIBRARY)
        for target in targets if _in(target, APPS)
    )
    assert not wrong, "the library imports the apps: " + "; ".join(wrong)


def _write(src: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = src / ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_a_cycle_through_a_function_level_import_is_found_and_named(tmp_path):
    src = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from refinemask import b\n",
        "b.py": "def f():\n    from refinemask.pkg.c import g\n",
        "pkg/__init__.py": "",
        "pkg/c.py": "from .. import a\nfrom . import d\n",
        "pkg/d.py": "import refinemask.errors\n",
    })
    graph = import_graph(src)
    assert graph["refinemask.pkg.c"] == {"refinemask.a", "refinemask.pkg.d"}
    assert find_cycles(graph) == [["refinemask.a", "refinemask.b", "refinemask.pkg.c", "refinemask.a"]]


@pytest.mark.parametrize("line", ["import refinemask.cli", "from refinemask.serve import make_server"])
def test_an_app_import_from_the_library_would_be_found(tmp_path, line):
    src = _write(tmp_path, {
        "__init__.py": "", "cli.py": "", "serve/__init__.py": "def make_server(): pass\n",
        "engine/__init__.py": "", "engine/x.py": f"def f():\n    {line}\n",
    })
    graph = import_graph(src)
    assert any(_in(t, APPS) for t in graph["refinemask.engine.x"])

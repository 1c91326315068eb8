"""The package's shape: no import circles, no module over 600 lines, no dead public helpers.

Imports are read with ``ast`` from every module of the package, wherever they stand: at the
top, inside functions, under ``if TYPE_CHECKING:``. A circle hidden in a function-level import
still ties the two modules together (one cannot be read, tested or replaced without the other).
Only explicit imports count: importing ``waveunet.a.b`` is an edge to ``waveunet.a.b``, not to
the package ``waveunet.a`` that Python also initialises.

A public helper (a module-level function or class whose name has no leading underscore) is dead
when no code of the package, ``scripts/`` or ``tests/`` names it: no call, attribute, import or
other reference, in its own module or elsewhere (its definition and mentions in docstrings or
comments do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "waveunet"
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import waveunet.a.b.c` -> the deepest known
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_reader_sees_every_kind_of_import(tmp_path):
    """The graph counts imports inside functions and under TYPE_CHECKING, relative or not."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import waveunet.audio\n"
        "from . import files\n"
        "from .reporting import figures\n"
        "if TYPE_CHECKING:\n"
        "    from .inference import Separator\n"
        "def f():\n"
        "    from .metrics import bound_hits\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = set(modules())
    assert imports_of("waveunet.probe", path, known) == {
        "waveunet.audio", "waveunet.files", "waveunet.reporting.figures", "waveunet.inference",
        "waveunet.metrics"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 20 and graph["waveunet.solver"]  # the package really was read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_600_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by idea"


def names_used(paths: list[Path]) -> set[str]:
    """Every name the code of ``paths`` refers to: names, attributes, imported names."""
    used: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.alias):
                used.add(node.name.rsplit(".", 1)[-1])
    return used


def public_helpers(path: Path) -> list[str]:
    return [node.name for node in ast.parse(path.read_text(), str(path)).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and not node.name.startswith("_")]


def test_the_dead_helper_check_finds_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('def used():\n    pass\n\n\ndef dead():\n    "used"\n\n\nused()\n')
    assert [n for n in public_helpers(probe) if n not in names_used([probe])] == ["dead"]


def test_no_dead_public_helpers():
    code = [*PACKAGE.rglob("*.py"), *(REPO / "scripts").rglob("*.py"),
            *(REPO / "tests").rglob("*.py")]
    used = names_used(code)
    dead = [f"{module}.{name}" for module, path in sorted(modules().items())
            for name in public_helpers(path) if name not in used]
    assert len(used) > 1000  # the code really was read
    assert dead == [], f"named by no code: {dead}"

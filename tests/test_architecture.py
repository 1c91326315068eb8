"""The package's shape: layers that import only downward, no import circles, small modules, no
dead public helpers.

Imports are read with ``ast`` from every module of the package, wherever they stand: at the
top, inside functions, under ``if TYPE_CHECKING:``. A circle hidden in a function-level import
still ties the two modules together (one cannot be read, tested or replaced without the other).
Imports by name count too: a string constant that is the dotted name of one of the package's
modules (``importlib.import_module("waveunet.training.train")``, a command table) is an edge to
that module. Importing ``waveunet.a.b`` is an edge to ``waveunet.a.b``, not to the package
``waveunet.a`` that Python also initialises.

The layers (docs/architecture.md has the picture), lowest first: the ground modules directly in
``waveunet/``; ``metrics`` and ``settings``; ``reporting``, ``model`` and ``data``;
``separation``; ``training`` and ``evaluation``; ``experiments``; ``tf`` (beside the model);
and at the top the command dispatcher (``cli``, ``__main__``, the package's API).

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
MAX_TOP_LEVEL_MODULES = 12

# The modules directly in waveunet/ that everything may build on.
GROUND = {"errors", "files", "folders", "audio", "devices", "precision", "version", "commands"}
TOP = {"cli", "__main__", ""}  # "" is the package itself: its public API
# Which layer may import which (its own always).
BELOW: dict[str, set[str]] = {
    "ground": set(),
    "metrics": {"ground"},
    "settings": {"ground"},
    "reporting": {"ground", "metrics"},
    "model": {"ground", "metrics", "settings"},
    "data": {"ground", "metrics", "settings"},
    "separation": {"ground", "metrics", "settings", "model", "data"},
    "training": {"ground", "metrics", "settings", "reporting", "model", "data", "separation"},
    "evaluation": {"ground", "metrics", "settings", "reporting", "model", "data", "separation"},
    "experiments": {"ground", "metrics", "settings", "reporting", "model", "data", "separation",
                    "training", "evaluation"},
    "tf": {"ground", "settings", "model"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer of ``waveunet.<...>``: a subpackage's name, ``ground`` or ``top``."""
    first = module.split(".")[1] if "." in module else ""
    if first in TOP:
        return "top"
    if first in GROUND:
        return "ground"
    if first not in BELOW:
        raise AssertionError(f"{module}: in no layer; add it to GROUND or BELOW")
    return first


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source, by statement or by
    name."""
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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # an import by name: a dotted module name ("waveunet" alone is also a word)
            targets = [node.value] if "." in node.value and node.value in known else []
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


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import against the layer table."""
    bad = []
    for source, targets in sorted(graph.items()):
        here = layer(source)
        if here == "top":
            continue
        for target in sorted(targets):
            there = layer(target)
            if there != here and there not in BELOW[here]:
                bad.append(f"{source} ({here}) -> {target} ({there})")
    return bad


def test_the_reader_sees_every_kind_of_import(tmp_path):
    """The graph counts imports inside functions, under TYPE_CHECKING, relative or not, and by
    name."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "import waveunet.audio\n"
        "from .. import files\n"
        "from ..reporting import figures\n"
        "if TYPE_CHECKING:\n"
        "    from ..separation.inference import Separator\n"
        "def f():\n"
        "    from ..metrics import bound_hits\n"
        "    return importlib.import_module('waveunet.experiments.compare')\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = set(modules())
    assert imports_of("waveunet.model.probe", path, known) == {
        "waveunet.audio", "waveunet.files", "waveunet.reporting.figures",
        "waveunet.separation.inference", "waveunet.metrics", "waveunet.experiments.compare"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = {"waveunet.model.probe": imports_of("waveunet.model.probe", path, known)}
    assert layer_violations(graph) == [
        "waveunet.model.probe (model) -> waveunet.experiments.compare (experiments)",
        "waveunet.model.probe (model) -> waveunet.reporting.figures (reporting)",
        "waveunet.model.probe (model) -> waveunet.separation.inference (separation)"]


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 20 and graph["waveunet.training.solver"]  # the package really was read
    assert "waveunet.training.train" in graph["waveunet.cli"]  # and its imports by name
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_import_goes_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_the_top_level_holds_few_modules():
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


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

"""The package's layout: no import cycle, and lower layers that know nothing of upper ones.

Every import counts, wherever it is written (module level, under ``TYPE_CHECKING`` or inside a
function): an import deferred into a function still ties the two modules together.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "poolwise"
# the layers under vision and pain: they import nothing of either
LOWER = ("poolwise.pooling", "poolwise.kernels", "poolwise.runs", "poolwise.stats",
         "poolwise._")
UPPER = ("poolwise.vision", "poolwise.pain")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def imported(path: Path, package: str) -> set[str]:
    """The poolwise modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` where that
    is a module, else ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    return {name for name in found if name.startswith("poolwise")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in imported(path, package) if m in MODULES and m != name}
    return graph


def test_the_import_graph_has_no_cycle():
    try:
        tuple(graphlib.TopologicalSorter(_graph()).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
    assert imported(SRC / "vision" / "train" / "spec.py", "poolwise.vision.train") >= {
        "poolwise.vision.train.engine", "poolwise.vision.train.checks"}


def test_lower_layers_import_nothing_from_vision_or_pain():
    graph = _graph()
    wrong = {name: sorted(m for m in deps if m.startswith(UPPER))
             for name, deps in graph.items() if name.startswith(LOWER)}
    assert {k: v for k, v in wrong.items() if v} == {}
    for side, other in (("poolwise.vision", "poolwise.pain"), ("poolwise.pain", "poolwise.vision")):
        crossing = {name: sorted(m for m in deps if m.startswith(other))
                    for name, deps in graph.items() if name.startswith(side)}
        assert {k: v for k, v in crossing.items() if v} == {}


@pytest.mark.parametrize("folder", ["pooling", "runs"])
def test_the_tests_of_lower_layers_import_nothing_from_vision_or_pain(folder):
    for path in sorted((ROOT / "tests" / folder).glob("*.py")):
        upper = sorted(m for m in imported(path, "tests") if m.startswith(UPPER))
        assert upper == [], f"{path.name} imports {upper}: move the test beside those modules"

"""The package declares what it imports, ships its license and type marker, and has one version."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import poolwise

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "poolwise"

# import name -> distribution name, where the two differ
DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn", "open_clip": "open_clip_torch",
                 "open_clip_train": "open_clip_torch", "yaml": "pyyaml",
                 "mlflow": "mlflow-skinny"}


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    return pytest.importorskip("tomli")


def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return _toml().load(f)["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("-", "_")
            for r in requirements}


def _imported() -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "poolwise"}


def test_every_imported_package_is_declared():
    project = _project()
    declared = _names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _names(extra)
    missing = sorted(m for m in _imported()
                     if DISTRIBUTIONS.get(m, m).lower().replace("-", "_") not in declared)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_one_version():
    project = _project()
    assert "version" not in project and "version" in project["dynamic"]
    citation = (ROOT / "CITATION.cff").read_text()
    assert f"\nversion: {poolwise.__version__}\n" in citation
    assert f"## [{poolwise.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_license_and_type_marker_ship():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert _project()["license-files"] == ["LICENSE"]
    assert (SRC / "py.typed").is_file()


def test_public_functions_are_annotated():
    """py.typed promises annotations: every public function and method (names without a
    leading underscore, plus __init__ / __call__) annotates its parameters and return."""
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))

        def visit(body, prefix="", path=path):
            for node in body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    visit(node.body, f"{node.name}.", path)
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if node.name.startswith("_") and node.name not in ("__init__", "__call__"):
                    continue
                args = node.args
                params = [a for a in [*args.posonlyargs, *args.args, *args.kwonlyargs,
                                      *filter(None, [args.vararg, args.kwarg])]
                          if a.arg not in ("self", "cls")]
                if any(a.annotation is None for a in params) or (
                        node.returns is None and node.name != "__init__"):
                    missing.append(f"{path.relative_to(SRC)}:{node.lineno} {prefix}{node.name}")

        visit(tree.body)
    assert not missing, "unannotated public functions:\n" + "\n".join(missing)

"""Recipe files: a run described in TOML, with command-line options on top.

TOML because a recipe needs comments (where each value comes from), Python reads it with its
standard library (``tomllib``, Python >= 3.11; the ``tomli`` backport on 3.10), and it has no
implicit typing surprises (``no`` is not a boolean, ``1e-3`` is a float).

A recipe is a flat table of :class:`~poolwise.vision.train.RunSpec` fields, with optional
``[model_kwargs]`` and ``[pool_kwargs]`` tables and an optional ``preset`` (as ``--preset``).
Precedence: the spec's defaults, then the command's defaults, then the recipe, then the options
given on the command line. The run folder
stores the fully resolved spec (``run.json``), and resuming refuses a different one.
Recipes shipped with poolwise are named by file stem (``poolwise vision recipes`` lists them).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path

SHIPPED = Path(__file__).parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of the recipes shipped inside the package."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli


def read_recipe(name_or_path: str | Path) -> tuple[Path, dict]:
    """The file and its table, for a shipped recipe's name or a path.

    Raises:
        FileNotFoundError: naming the shipped recipes, for a name that is neither.
        ValueError: naming the file and position, for text that is not TOML.
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = shipped_recipes()
        if str(name_or_path) not in shipped:
            raise FileNotFoundError(f"recipe {name_or_path}: no such file and no shipped recipe "
                                    f"of that name (shipped: {', '.join(shipped)})")
        path = shipped[str(name_or_path)]
    toml = _toml()
    try:
        with open(path, "rb") as f:
            return path, toml.load(f)
    except toml.TOMLDecodeError as error:
        raise ValueError(f"{path}: not a valid TOML recipe ({error})") from None


def _accepts(annotation, value) -> bool:
    """Whether ``value`` (from TOML) fits a RunSpec field's annotation; ints fit floats,
    booleans fit only booleans."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def check_recipe(table: dict, spec_type: type, source: str) -> dict:
    """The table's values, each checked against the spec's fields; an optional ``preset`` key
    (a name of :data:`poolwise.vision.presets.PRESETS`) is kept as it is.

    Raises:
        ValueError: naming the file and key, for an unknown key or a value of the wrong type.
    """
    from poolwise.vision.presets import PRESETS

    table = dict(table)
    preset = table.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{source}: preset = {preset!r} is not a preset (known: "
                         f"{', '.join(sorted(PRESETS))})")
    hints = typing.get_type_hints(spec_type)
    fields = {f.name for f in dataclasses.fields(spec_type)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown recipe key(s) {', '.join(unknown)}; the keys are "
                         f"{spec_type.__name__}'s fields: {', '.join(sorted(fields))}")
    for key, value in table.items():
        if not _accepts(hints[key], value):
            raise ValueError(f"{source}: {key} = {value!r} is not a valid value for {key} "
                             f"(expected {hints[key]})")
    return table if preset is None else {**table, "preset": preset}

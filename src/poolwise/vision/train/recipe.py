"""Recipe files: a run described in TOML, with command-line options on top.

TOML because a recipe needs comments (where each value comes from), Python reads it with its
standard library (``tomllib``, Python >= 3.11; the ``tomli`` backport on 3.10), and it has no
implicit typing surprises (``no`` is not a boolean, ``1e-3`` is a float).

A recipe is a flat table of :class:`~poolwise.vision.train.spec.RunSpec` fields, with optional
``[model_kwargs]`` and ``[pool_kwargs]`` tables and an optional ``preset`` (as ``--preset``).
Precedence: the spec's defaults, then the command's defaults, then the recipe, then the options
given on the command line. The run folder
stores the fully resolved spec (``run.json``), and resuming refuses a different one.
Recipes shipped with poolwise are named by file stem (``poolwise vision recipes`` lists them).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poolwise._io import read_toml

SHIPPED = Path(__file__).parents[1] / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of the recipes shipped inside the package."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


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
    return path, read_toml(path, "TOML recipe")


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
    (a name of :data:`poolwise.vision.train.presets.PRESETS`) is kept as it is.

    Raises:
        ValueError: naming the file and key, for an unknown key or a value of the wrong type.
    """
    from poolwise.vision.train.presets import PRESETS

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


def with_data_image_size(model: str, model_kwargs: Mapping[str, Any], data: str) -> dict:
    """``model_kwargs`` with a ViT's ``img_size`` defaulting to the data's image size."""
    from poolwise.vision.train.presets import VIT_PREFIXES

    kwargs = dict(model_kwargs)
    if model.startswith(VIT_PREFIXES) and "img_size" not in kwargs:
        from poolwise.vision.data import load_images

        kwargs["img_size"] = load_images(data)["train"].image_size
    return kwargs


def resolve_spec(options: Mapping[str, Any], *, recipe: str | Path | None = None,
                 preset: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None) -> Any:
    """The :class:`~poolwise.vision.train.spec.RunSpec` of a run, from lowest to highest
    precedence: RunSpec's defaults, ``defaults`` (a command's own, e.g. its epochs), the
    recipe file (a path or a shipped recipe's name), ``options`` (RunSpec fields given by the
    user; None values are ignored), with ``model_kwargs`` (architecture options) over the
    recipe's ``[model_kwargs]``. Without a model: the default small ViT and its preset. The
    preset (``preset`` over the recipe's) resizes a ViT where asked; a ViT's ``img_size``
    defaults to the data's image size. ``vision train``, ``retrieval`` and ``compare`` call
    exactly this, so a Python caller reproduces a command's run.

    Raises:
        FileNotFoundError, ValueError: naming the recipe file and key at fault.
    """
    from poolwise.vision.train.presets import DEFAULT_MODEL, DEFAULT_PRESET, apply_preset
    from poolwise.vision.train.spec import RunSpec

    values = dict(defaults or {})
    if recipe is not None:
        path, table = read_recipe(recipe)
        table = check_recipe(table, RunSpec, str(path))
        preset = preset or table.pop("preset", None)
        values.update(table)
    names = {f.name for f in dataclasses.fields(RunSpec)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ValueError(f"unknown run option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    values.update({k: v for k, v in options.items() if v is not None})
    kwargs = dict(values.pop("model_kwargs", {}))
    kwargs.update({k: v for k, v in (model_kwargs or {}).items() if v is not None})
    model = values.get("model")
    if model is None:
        model, preset = DEFAULT_MODEL, preset or DEFAULT_PRESET
    values["model"] = model
    kwargs = apply_preset(preset, model, kwargs, pretrained=bool(values.get("pretrained")),
                          checkpoint=values.get("checkpoint"))
    kwargs = with_data_image_size(model, kwargs, values.setdefault("data", "embedded"))
    spec = RunSpec(model_kwargs=kwargs, **values)
    spec.check()
    return spec

"""Building typed dataclasses from plain dicts (parsed YAML), naming the full key path in every error.

`build(cls, data, path)` checks every key against the dataclass's fields (an unknown key is an error
with a close-match suggestion), fills defaults, reports missing required keys, coerces values by the
field's type hint (nested dataclasses, Optional, list, tuple, dict, Literal, bool, int, float, str; a
field's `metadata["parse"]` overrides), and turns a `FieldError` from `__post_init__` into a
`RecipeError` prefixed with the field's path ("stages.align.grad_accum must be >= 1, got 0").
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import fields
from typing import Any, Literal

from hydrahead.errors import RecipeError

class FieldError(RecipeError):
    """A value that fails a check in `__post_init__`; `build` prefixes the field's full path."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name} {message}" if name else message)
        self.name, self.message = name, message


def check(ok: bool, name: str, message: str) -> None:
    """Raise FieldError(name, message) unless ok (for dataclass __post_init__ checks)."""
    if not ok:
        raise FieldError(name, message)


def suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(allowed)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from `data`, naming the full key path in every error."""
    where = path or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    for key in data:
        if key not in names:
            raise RecipeError(f"unknown key {_join(path, key)!r}{suggest(key, names)}")
    kwargs = {}
    for f in fields(cls):
        key_path = _join(path, f.name)
        if f.name in data:
            parse = f.metadata.get("parse")
            if parse is not None:
                try:
                    kwargs[f.name] = parse(data[f.name])
                except ValueError as err:
                    raise RecipeError(f"{key_path}: {err}") from None
            else:
                kwargs[f.name] = _coerce(hints[f.name], data[f.name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"missing required key {key_path!r}")
    try:
        return cls(**kwargs)
    except FieldError as err:
        where = _join(path, err.name) if err.name else (path or "recipe")
        raise RecipeError(f"{where} {err.message}") from None


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, path)
        errors = []
        for option in options:
            try:
                return _coerce(option, value, path)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(errors[0])
    if dataclasses.is_dataclass(tp):
        return build(tp, {} if value is None else value, path)
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{path} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{path} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise RecipeError(f"{path} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RecipeError(f"{path} must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):  # no setting of a recipe means anything at infinity or NaN
            raise RecipeError(f"{path} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{path} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"recipe field {path} has an unsupported type {tp!r}")  # a bug in this module

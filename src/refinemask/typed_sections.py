"""Typed config sections from plain data: the machinery under :mod:`refinemask.config`.

A section is a dataclass that mixes in :class:`Checked`. Each key's valid values are declared
beside it: a ``Literal[...]`` annotation for a choice, :func:`key` with ``at_least`` or ``rule``
for a range; :class:`Checked` checks them whenever the section is built. :func:`from_dict`
builds a section from YAML/override values, converting each to its annotated type (resolved by
``typing.get_type_hints``, never ``eval``) and naming the nearest valid key for a typo.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any, Literal

from refinemask.errors import RefineMaskError


def key(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, at_least: float | None = None,
        rule: tuple[Callable[[Any], bool], str] | None = None):
    """A config key with its valid range: ``at_least`` a lower bound, ``rule`` (test, what it
    must be) anything else. Checked by :class:`Checked` whenever the section is built."""
    return field(default=default, default_factory=factory, metadata={"at_least": at_least, "rule": rule})


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _choices(annotation) -> tuple | None:
    """The allowed values of a ``Literal`` annotation, also inside ``list[...]`` or ``... | None``."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = _choices(arg)
        if found is not None:
            return found
    return None


def _choice_error(name: str, annotation, value) -> str | None:
    """Why ``value`` is not among the choices its annotation declares (None when it is, or when
    the annotation declares none): a ``Literal``, also inside ``list[...]`` or ``... | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        if isinstance(value, (list, dict)) or value not in args:
            names = [str(a) for a in args]
            return f"{name}: {value!r} is not one of {', '.join(names)}{suggest(str(value), names)}"
        return None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = [_choice_error(name, arg, value) for arg in args if arg is not type(None)]
        return None if not errors or None in errors else errors[0]
    if origin is list and args and _choices(args[0]) is not None:
        if not isinstance(value, list):
            return f"{name}: expected a list, got {value!r}"
        return next((error for error in (_choice_error(name, args[0], v) for v in value) if error), None)
    return None


class Checked:
    """Mixin of the config sections: checks every key's declared valid values on construction."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                continue
            error = _choice_error(f.name, _hints(type(self))[f.name], value)
            if error:
                raise RefineMaskError(error)
            if value is None:
                continue
            low = f.metadata.get("at_least")
            if low is not None and value < low:
                what = "0 (none) or positive" if low == 0 else f"at least {low}"
                raise RefineMaskError(f"{f.name} must be {what}, got {value}")
            rule = f.metadata.get("rule")
            if rule is not None and not rule[0](value):
                raise RefineMaskError(f"{f.name} must be {rule[1]}, got {value}")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def suggest(name: str, options: list[str]) -> str:
    """' (did you mean X?)' for the nearest valid name, or ''."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, annotation, where: str):
    """Check and convert a YAML/override value to the annotated type (resolved by
    ``typing.get_type_hints``); a ``Literal``'s choices are checked by :class:`Checked`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except RefineMaskError as err:
                errors.append(str(err))
        raise RefineMaskError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(v, args[0] if args else Any, where) for v in value]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise RefineMaskError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise RefineMaskError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise RefineMaskError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise RefineMaskError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise RefineMaskError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RefineMaskError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise RefineMaskError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with a suggestion."""
    if data is None:
        data = {}
    names = _field_names(cls)
    hints = _hints(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in names:
            raise RefineMaskError(f"{where}: unknown key {name!r}{suggest(name, names)}")
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where != "config" else name)
    try:
        return cls(**kwargs)
    except RefineMaskError as err:
        # Checked names the key; say which section it is in
        raise RefineMaskError(f"{where}.{err}" if where != "config" else str(err)) from None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)

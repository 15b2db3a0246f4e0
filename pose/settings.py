"""Typed settings: frozen dataclasses built once from a mapping (a section of the params file), checked field by
field, with each default defined once — on the dataclass.

:func:`from_mapping` is the one converter. It rejects unknown keys and values of the wrong type with a
:class:`~pose.io.PoseDataError` that names the source and the dotted field (``fpd.export.latency_runs``): a quoted
``"false"`` is not a boolean, ``"abc"`` is not an integer, and ``true`` is not a number. ``None`` stands for "the
default" only where the field's type allows ``None``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

from pose.io import PoseDataError

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, source: str, prefix: str) -> T:
    """``cls(**data)`` with every value checked against the field's type annotation (nested dataclasses from
    nested mappings). ``prefix`` is the dotted name of ``data`` in ``source``, for messages."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {type(data).__name__}", field=prefix)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {unknown}; known: {sorted(fields)}", field=_join(prefix, unknown[0]))
    hints = get_type_hints(cls)
    values = {k: _convert(hints[k], v, source, _join(prefix, k)) for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        if isinstance(e, PoseDataError):
            raise
        raise PoseDataError(source, str(e), field=prefix) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _convert(tp: Any, value: Any, source: str, field: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise PoseDataError(source, "must not be null", field=field)
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, source, field)
            except PoseDataError as e:
                errors.append(e.problem)
        raise PoseDataError(source, "; ".join(dict.fromkeys(errors)), field=field)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, source, field)
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise PoseDataError(source, f"must be one of {list(get_args(tp))}, got {value!r}", field=field)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise PoseDataError(source, f"must be a list, got {value!r}", field=field)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PoseDataError(source, f"must have {len(args)} values, got {len(value)}", field=field)
            return tuple(_convert(a, v, source, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, source, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise PoseDataError(source, f"must be a mapping, got {value!r}", field=field)
        args = get_args(tp)
        if len(args) == 2:
            return {_convert(args[0], k, source, field): _convert(args[1], v, source, _join(field, str(k)))
                    for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise PoseDataError(source, f"must be true or false (unquoted), got {value!r}", field=field)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PoseDataError(source, f"must be an integer, got {value!r}", field=field)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PoseDataError(source, f"must be a finite number, got {value!r}", field=field)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PoseDataError(source, f"must be a string, got {value!r}", field=field)
        return value
    raise TypeError(f"{field}: unsupported settings type {tp!r}")


def positive(source: str, field: str, value: float | int | None, minimum: float = 1) -> None:
    """Raise ``PoseDataError`` unless ``value`` is ``None`` or at least ``minimum``."""
    if value is not None and value < minimum:
        raise PoseDataError(source, f"must be >= {minimum}, got {value!r}", field=field)


def keyword_values(fn: Any, values: Mapping[str, Any] | None, allowed: Sequence[str], source: str,
                   prefix: str) -> dict[str, Any]:
    """``values`` checked as keyword arguments of ``fn`` (a constructor, say): names among ``allowed``, each
    converted by ``fn``'s annotation. The defaults stay ``fn``'s (defined once, where they are used)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {type(values).__name__}", field=prefix)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {unknown}; known: {list(allowed)}", field=_join(prefix, unknown[0]))
    hints = get_type_hints(fn)
    return {k: _convert(hints.get(k, Any), v, source, _join(prefix, k)) for k, v in values.items()}

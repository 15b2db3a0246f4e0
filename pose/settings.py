"""Typed settings: frozen dataclasses built once from a mapping (a section of the params file), checked field by
field, with each default defined once — on the dataclass.

:func:`from_mapping` is the one converter. It rejects unknown keys and values of the wrong type with a
:class:`~pose.io.PoseDataError` that names the source and the dotted field (``fpd.export.latency_runs``): a quoted
``"false"`` is not a boolean, ``"abc"`` is not an integer, and ``true`` is not a number. ``None`` stands for "the
default" only where the field's type allows ``None``. A field without a default is required: its absence is an error
naming ``<prefix>.<key>``.

Ranges and relations between fields are the settings class's own: a class may define ``check(self, source, prefix)``,
which :func:`from_mapping` calls on every object it builds (nested ones too), so a settings object is checked
completely wherever it is read, before any work starts. :func:`positive`, :func:`greater` and :func:`at_most` raise
the errors such checks need.

``keys`` reads a part of a section: a stage reads only the params keys it declares (``dvc.yaml``), so its outcome
never depends on a key that does not make it rerun. The section's key *names* are still checked (an unknown key is a
typo), and an unread field keeps its default, or ``None`` when it has none (it is not this reading's).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

from pose.io import PoseDataError

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, source: str, prefix: str,
                 keys: Sequence[str] | None = None) -> T:
    """``cls(**data)`` with every value checked against the field's type annotation (nested dataclasses from
    nested mappings), then ``check(source, prefix)`` when the class has one. ``prefix`` is the dotted name of
    ``data`` in ``source``, for messages. ``keys``: read only these fields (see the module docstring)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {type(data).__name__}", field=prefix)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {unknown}; known: {sorted(fields)}",
                            field=_join(prefix, str(unknown[0])))
    read = list(fields) if keys is None else list(keys)
    not_fields = [k for k in read if k not in fields]
    if not_fields:
        raise TypeError(f"{cls.__name__} has no field(s) {not_fields}")   # the caller's bug, not the params'
    missing = [k for k in read if k not in data and _required(fields[k])]
    if missing:
        raise PoseDataError(source, "missing (a required key)", field=_join(prefix, missing[0]))
    hints = get_type_hints(cls)
    values = {k: _convert(hints[k], data[k], source, _join(prefix, k)) for k in read if k in data}
    values.update({k: None for k, f in fields.items() if k not in read and _required(f)})   # unread, no default
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as e:
        if isinstance(e, PoseDataError):
            raise
        raise PoseDataError(source, str(e), field=prefix) from None
    check = getattr(obj, "check", None)
    if callable(check):
        check(source, prefix)
    return obj


def convert_fields(cls: type, data: Mapping[str, Any] | None, source: str, prefix: str) -> dict[str, Any]:
    """``data``'s values converted by the types of ``cls``'s fields of the same names (unknown keys are errors),
    each named ``<prefix>.<key>``: a layer that is merged into a section before :func:`from_mapping` reads it (a
    profile), checked under its own name."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise PoseDataError(source, f"must be a mapping, got {type(data).__name__}", field=prefix)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields, key=str)
    if unknown:
        raise PoseDataError(source, f"unknown key(s) {unknown}; known: {sorted(fields)}",
                            field=_join(prefix, str(unknown[0])))
    hints = get_type_hints(cls)
    return {k: _convert(hints[k], v, source, _join(prefix, k)) for k, v in data.items()}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


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
        rest = [o for o in options if o is not type(None)]
        if len(rest) == 1:              # X | None: X's own error, with its own (nested) field name
            return _convert(rest[0], value, source, field)
        errors = []
        for option in rest:
            try:
                return _convert(option, value, source, field)
            except PoseDataError as e:
                errors.append(e.problem)
        raise PoseDataError(source, "; ".join(dict.fromkeys(errors)), field=field)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):       # built (and checked) already, e.g. a profile's part with its own prefix
            return value
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
            raise PoseDataError(source, f"must be a finite number, got {value!r}{_number_hint(value)}", field=field)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PoseDataError(source, f"must be a string, got {value!r}", field=field)
        return value
    raise TypeError(f"{field}: unsupported settings type {tp!r}")


def _number_hint(value: Any) -> str:
    """Why a number may have arrived as a string: YAML 1.1 (PyYAML) reads ``1e-4`` (no dot) as one."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (a string: unquote it; YAML reads an exponent without a dot, 1e-4, as text too: write 1.0e-4)"
    return ""


def number(source: str, field: str, value: Any) -> float:
    """``value`` as a float when it is a finite number (not a bool, not a string), else ``PoseDataError``."""
    return _convert(float, value, source, field)


def positive(source: str, field: str, value: float | int | None, minimum: float = 1) -> None:
    """Raise ``PoseDataError`` unless ``value`` is ``None`` or at least ``minimum``."""
    if value is not None and value < minimum:
        raise PoseDataError(source, f"must be >= {minimum}, got {value!r}", field=field)


def greater(source: str, field: str, value: float | int | None, bound: float = 0) -> None:
    """Raise ``PoseDataError`` unless ``value`` is ``None`` or greater than ``bound``."""
    if value is not None and not value > bound:
        raise PoseDataError(source, f"must be > {bound}, got {value!r}", field=field)


def at_most(source: str, field: str, value: float | int | None, maximum: float) -> None:
    """Raise ``PoseDataError`` unless ``value`` is ``None`` or at most ``maximum``."""
    if value is not None and value > maximum:
        raise PoseDataError(source, f"must be <= {maximum}, got {value!r}", field=field)


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

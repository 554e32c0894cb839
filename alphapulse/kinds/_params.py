"""Node-kind parameters: one documented dataclass per kind, from which its JSON Schema comes.

A kind declares its parameters as a frozen dataclass whose fields are made with :func:`param`.
Every field carries a description (it becomes the schema's ``description`` and the docs), and
says whether a change to it can reach a running node (``live=True``) or needs a restart, and
whether it holds a secret (then it must come from an environment variable, never a literal).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any

PARAM_DOC = "alphapulse.doc"
PARAM_LIVE = "alphapulse.live"
PARAM_SECRET = "alphapulse.secret"
PARAM_SCHEMA = "alphapulse.schema"


def param(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    live: bool = False,
    secret: bool = False,
    default_factory: Any = dataclasses.MISSING,
    **schema: Any,
) -> Any:
    """Declare one parameter of a node kind.

    ``doc`` is required: it is the field's description in the schema and the docs.
    ``live`` marks a parameter a running node accepts without a restart.
    ``secret`` marks a credential: topologies must interpolate it from the environment.
    Remaining keywords are JSON Schema keywords added to the field's schema
    (``minimum=1``, ``pattern=...``, ``examples=[...]``).
    """
    if not doc or not doc.strip():
        raise TypeError("param() needs a non-empty doc= describing the parameter")
    metadata = {PARAM_DOC: doc.strip(), PARAM_LIVE: live, PARAM_SECRET: secret, PARAM_SCHEMA: schema}
    if isinstance(default, (list, dict, set)):
        value = default
        default_factory = lambda: type(value)(value)  # noqa: E731
        default = dataclasses.MISSING
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


class NoParams:
    """Parameters of a kind that takes none."""


NoParams = dataclasses.dataclass(frozen=True)(NoParams)


def _type_schema(tp: Any, owner: str) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return {}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        item = args[0] if args else Any
        schema: dict[str, Any] = {"type": "array", "items": _type_schema(item, owner)}
        if origin in (set, frozenset):
            schema["uniqueItems"] = True
        return schema
    if origin in (dict, Mapping) or tp is dict:
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": _type_schema(value, owner)}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        schemas = [_type_schema(a, owner) for a in options]
        if type(None) in args:
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if dataclasses.is_dataclass(tp):
        return params_schema(tp)
    raise TypeError(f"{owner}: parameter type {tp!r} has no JSON Schema mapping")


def params_schema(params_type: type) -> dict[str, Any]:
    """The JSON Schema (2020-12 vocabulary) of a params dataclass."""
    hints = typing.get_type_hints(params_type)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(params_type):
        owner = f"{params_type.__qualname__}.{field.name}"
        doc = field.metadata.get(PARAM_DOC)
        if not doc:
            raise TypeError(f"{owner}: every parameter needs param(doc=...)")
        schema = _type_schema(hints[field.name], owner)
        schema["description"] = doc
        schema.update(field.metadata.get(PARAM_SCHEMA, {}))
        if field.metadata.get(PARAM_SECRET):
            schema["x-secret"] = True
        if field.metadata.get(PARAM_LIVE):
            schema["x-live"] = True
        if field.default is not dataclasses.MISSING:
            schema["default"] = _jsonable(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            schema["default"] = _jsonable(field.default_factory())
        else:
            required.append(field.name)
        properties[field.name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        result["required"] = required
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def live_fields(params_type: type) -> frozenset[str]:
    """Names of the parameters a running node can take without a restart."""
    return frozenset(f.name for f in dataclasses.fields(params_type) if f.metadata.get(PARAM_LIVE))


def secret_fields(params_type: type) -> frozenset[str]:
    """Names of the parameters that hold credentials."""
    return frozenset(f.name for f in dataclasses.fields(params_type) if f.metadata.get(PARAM_SECRET))


def build_params(params_type: type, values: Mapping[str, Any]) -> Any:
    """Instantiate a params dataclass from already schema-validated plain values."""
    hints = typing.get_type_hints(params_type)
    kwargs = {}
    for field in dataclasses.fields(params_type):
        if field.name in values:
            kwargs[field.name] = _coerce(hints[field.name], values[field.name])
    return params_type(**kwargs)


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return build_params(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value)
        return value
    if origin is tuple:
        return tuple(_coerce(args[0], v) for v in value) if args else tuple(value)
    if origin in (frozenset, set):
        return origin(_coerce(args[0], v) for v in value)
    if origin is list:
        return [_coerce(args[0], v) for v in value]
    if origin in (dict, Mapping) and len(args) == 2:
        return {k: _coerce(args[1], v) for k, v in value.items()}
    return value


def params_to_plain(params: Any) -> dict[str, Any]:
    """A params instance as plain JSON-able values (for plans, control sockets, fingerprints)."""
    return _jsonable(params)

"""Schema violations explained for a person, at the position of the offending key or value.

jsonschema's messages name the validator ("'x' is not of type 'integer'"); here each one says
which key of which node is wrong, what was expected, and, for a misspelt key or kind, what
was probably meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import jsonschema

from alphapulse.topology._diagnostics import Diagnostic, Severity
from alphapulse.topology._loader import JsonPath, SourceMap
from alphapulse.topology._schema import topology_validator

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)``-style suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def describe_path(path: JsonPath) -> str:
    """A human name for a place in the file: "param 'rate' of node 'src'"."""
    if not path:
        return "the topology"
    if path[0] == "nodes" and len(path) >= 2:
        node = f"node '{path[1]}'"
        rest = path[2:]
        if not rest:
            return node
        if rest[0] == "params":
            if len(rest) == 1:
                return f"params of {node}"
            return f"param '{_dotted(rest[1:])}' of {node}"
        if rest[0] == "inputs" and len(rest) >= 2 and isinstance(rest[1], int):
            where = f"input {rest[1] + 1} of {node}"
            return where if len(rest) == 2 else f"'{_dotted(rest[2:])}' of {where}"
        return f"'{_dotted(rest)}' of {node}"
    return f"'{_dotted(path)}'"


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _article_type(expected: Any) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return " or ".join(_TYPE_NAMES.get(n, n) for n in names)


def schema_diagnostics(data: Any, marks: SourceMap, file: str) -> list[Diagnostic]:
    """Every schema violation of ``data`` as a diagnostic at its position."""
    out: list[Diagnostic] = []
    for error in topology_validator().iter_errors(data):
        out.extend(_explain(error, marks, file))
    return out


def _diag(file: str, mark: Any, message: str, code: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, file, mark.line, mark.col, message, code)


def _explain(error: jsonschema.ValidationError, marks: SourceMap, file: str) -> list[Diagnostic]:
    path: JsonPath = tuple(error.absolute_path)
    where = describe_path(path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    inst = error.instance
    at_value = marks.value(path)
    in_property_names = "propertyNames" in error.schema_path

    if in_property_names:
        return [_name_error(path, inst, marks, file)]
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extras = [k for k in inst if k not in allowed] if isinstance(inst, dict) else []
        return [_unknown_key(path, key, allowed, marks, file) for key in extras]
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(inst, dict) and k not in inst]
        return [_missing(path, key, marks, file) for key in missing]
    if kind == "enum" and path[-1:] == ("kind",) and path[:1] == ("nodes",):
        from alphapulse.kinds import load_kinds

        known = list(load_kinds())
        hint = did_you_mean(str(inst), known)
        if not hint:
            hint = f"; known kinds: {', '.join(known)}"
        message = f"unknown node kind {_show_plain(inst)} for node '{path[1]}'{hint}"
        return [_diag(file, at_value, message + " (`alphapulse kinds` lists them)", "unknown-kind")]
    if kind == "enum":
        choices = [c for c in error.validator_value]
        words = [str(c) for c in choices if isinstance(c, str)]
        hint = did_you_mean(str(inst), words) if isinstance(inst, str) else ""
        if path[-2:-1] == ("types",):
            return [_diag(file, at_value, f"unknown TLV type {_show_plain(inst)} in {where}{hint}"
                          " (types are CamelCase, e.g. Trade, OrderBookDelta)", "schema")]
        options = ", ".join(_plain(c) for c in choices)
        return [_diag(file, at_value, f"{where} is {_show(inst)}, but must be one of: "
                      f"{options}{hint}", "schema")]
    if kind == "type":
        message = f"{where} must be {_article_type(error.validator_value)}, not {_show(inst)}"
        if path and path[0] == "nodes" and len(path) == 2:
            message += "; a node is a mapping with at least 'kind:'"
        return [_diag(file, at_value, message, "schema")]
    if kind == "pattern":
        if path[-1:] == ("topology",):
            message = (f"topology name {inst!r} may only contain lowercase letters, digits, '-' "
                       "and '_' (it names the run directory and the supervisord group)")
        elif path[:1] == ("nodes",) and (path[-1:] == ("from",) or path[-2:-1] == ("inputs",)):
            message = f"{where} names {inst!r}, which is not a valid node name"
        else:
            description = schema.get("description")
            message = (f"{where} is {inst!r}, which does not match the pattern "
                       f"{error.validator_value}")
            if description:
                message += f" ({description})"
        return [_diag(file, at_value, message, "schema")]
    limits = {
        "minimum": "at least {v}",
        "maximum": "at most {v}",
        "exclusiveMinimum": "greater than {v}",
        "exclusiveMaximum": "less than {v}",
        "minItems": "a list of at least {v} item(s)",
        "maxItems": "a list of at most {v} item(s)",
        "minLength": "at least {v} character(s) long",
        "maxLength": "at most {v} characters long",
        "minProperties": "a mapping with at least {v} entry(ies)",
    }
    if kind in limits:
        wanted = limits[kind].format(v=error.validator_value)
        return [_diag(file, at_value, f"{where} must be {wanted}, not {_show(inst)}", "schema")]
    if kind == "uniqueItems":
        return [_diag(file, at_value, f"{where} lists the same item twice; remove the duplicate",
                      "schema")]
    return [_diag(file, at_value, f"{where}: {error.message}", "schema")]


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _show_plain(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else _show(value)


def _unknown_key(path: JsonPath, key: str, allowed: list[str], marks: SourceMap,
                 file: str) -> Diagnostic:
    mark = marks.key((*path, key))
    hint = did_you_mean(key, allowed)
    choices = f" (allowed: {', '.join(allowed)})" if allowed else ""
    if path[:1] == ("nodes",) and path[2:] == ("params",):
        message = (f"unknown param '{key}' for node '{path[1]}'{hint}{choices}; "
                   "`alphapulse kinds <kind>` shows every param")
    elif path == ("nodes",):
        message = f"unknown node '{key}'"
    else:
        message = f"unknown key '{key}' in {describe_path(path)}{hint}{choices}"
    return _diag(file, mark, message, "unknown-key")


def _missing(path: JsonPath, key: str, marks: SourceMap, file: str) -> Diagnostic:
    mark = marks.key(path) if path else marks.value(path)
    if path[:1] == ("nodes",) and len(path) == 2 and key == "domain":
        message = (f"relay '{path[1]}' must declare its relay domain: add 'domain: market_data' "
                   "(or signal, execution, system)")
    elif path[:1] == ("nodes",) and len(path) == 2 and key == "params":
        message = (f"node '{path[1]}' needs 'params:' with its required params "
                   "(`alphapulse kinds <kind>` shows them)")
    elif path[:1] == ("nodes",) and len(path) == 3 and path[2] == "params":
        message = f"node '{path[1]}' is missing the required param '{key}'"
    elif not path:
        example = {"topology": "topology: my_pipeline", "nodes": "nodes: {name: {kind: ...}}"}
        message = f"the topology is missing '{key}'; add '{example.get(key, key + ': ...')}'"
    else:
        message = f"{describe_path(path)} is missing the required key '{key}'"
    return _diag(file, mark, message, "missing-key")


def _name_error(path: JsonPath, name: Any, marks: SourceMap, file: str) -> Diagnostic:
    mark = marks.key((*path, name))
    if path == ("nodes",):
        fixed = "".join(c if c.isalnum() else "_" for c in str(name).lower()).strip("_")
        suggestion = f"; try '{fixed}'" if fixed and fixed != name else ""
        message = (f"node name '{name}' must start with a lowercase letter and use only lowercase "
                   "letters, digits and '_', at most 40 characters (it names sockets and "
                   f"supervisord programs){suggestion}")
    else:
        message = f"key '{name}' in {describe_path(path)} is not allowed here"
    return _diag(file, mark, message, "bad-name")

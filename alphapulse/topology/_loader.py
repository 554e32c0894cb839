"""YAML to plain data, keeping where every key and value came from.

PyYAML's ``safe_load`` loses positions and silently keeps the last of two duplicate keys, so
this module composes the node tree itself (``yaml.compose`` machinery) and builds plain
JSON-able data plus a :class:`SourceMap` keyed by JSON path. Nothing here knows about
topologies; it only turns text into data with positions, and syntax problems into diagnostics.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import yaml

from alphapulse.topology._diagnostics import Diagnostic, Severity

JsonPath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Mark:
    """A 1-based line and column."""

    line: int
    col: int

    @classmethod
    def of(cls, mark: yaml.Mark) -> Mark:
        return cls(mark.line + 1, mark.column + 1)


@dataclasses.dataclass
class SourceMap:
    """Positions of the values and mapping keys of a document, by JSON path."""

    values: dict[JsonPath, Mark] = dataclasses.field(default_factory=dict)
    keys: dict[JsonPath, Mark] = dataclasses.field(default_factory=dict)
    styles: dict[JsonPath, str] = dataclasses.field(default_factory=dict)
    """Scalar style per path: '' for plain, or the quote character / block indicator."""

    def value(self, path: JsonPath) -> Mark:
        """Where the value at ``path`` starts (or its nearest known ancestor)."""
        for cut in range(len(path), -1, -1):
            mark = self.values.get(path[:cut])
            if mark is not None:
                return mark
        return Mark(1, 1)

    def key(self, path: JsonPath) -> Mark:
        """Where the key naming ``path`` starts; the value's position for list items."""
        mark = self.keys.get(path)
        return mark if mark is not None else self.value(path)


@dataclasses.dataclass
class Document:
    data: Any
    marks: SourceMap


def load_yaml(text: str, file: str) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document into plain data and positions, or syntax diagnostics."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_diagnostic(exc, file)]
    except yaml.YAMLError as exc:  # a reader error without a mark
        return None, [Diagnostic(Severity.ERROR, file, 1, 1, f"cannot read YAML: {exc}", "yaml")]
    if root is None:
        message = "the file is empty; a topology needs at least 'topology:' and 'nodes:'"
        return None, [Diagnostic(Severity.ERROR, file, 1, 1, message, "empty")]
    builder = _Builder(loader, file)
    try:
        data = builder.build(root, ())
    finally:
        loader.dispose()
    return Document(data, builder.marks), builder.diagnostics


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    message = f"YAML syntax error: {problem}"
    if exc.context and exc.context_mark:
        message += f" ({exc.context} at {exc.context_mark.line + 1}:{exc.context_mark.column + 1})"
    hint = _SYNTAX_HINTS.get(problem)
    if hint is None and problem.startswith("expected <block end>"):
        hint = "check the indentation of this line: it does not line up with the lines above"
    if hint:
        message += f"; {hint}"
    return Diagnostic(Severity.ERROR, file, line, col, message, "yaml")


_SYNTAX_HINTS = {
    "mapping values are not allowed here": "check the indentation, or quote a value that "
    "contains ': '",
    "found character '\\t' that cannot start any token": "YAML indents with spaces, not tabs",
    "could not find expected ':'": "a key needs 'key: value'; check the indentation above",
    "expected <block end>, but found '-'": "a list item is indented differently from its "
    "siblings",
}

_JSON_SCALARS = (str, int, float, bool, type(None))


class _Builder:
    """Builds plain data from a composed node tree, recording marks and duplicate keys."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.marks = SourceMap()
        self.diagnostics: list[Diagnostic] = []
        self._active: set[int] = set()

    def error(self, mark: Mark, message: str, code: str) -> None:
        self.diagnostics.append(Diagnostic(Severity.ERROR, self.file, mark.line, mark.col,
                                           message, code))

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        self.marks.values[path] = Mark.of(node.start_mark)
        if id(node) in self._active:
            self.error(Mark.of(node.start_mark), "an alias refers to itself; topologies cannot "
                       "contain recursive structures", "yaml")
            return None
        if isinstance(node, yaml.ScalarNode):
            self.marks.styles[path] = node.style or ""
            return self._scalar(node)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            mark = Mark.of(exc.problem_mark or node.start_mark)
            self.error(mark, f"cannot read value {node.value!r}: {exc.problem}", "yaml")
            return node.value
        if isinstance(value, (datetime.date, datetime.datetime)):
            return node.value  # keep dates as the text written; params are never dates
        if not isinstance(value, _JSON_SCALARS):
            return node.value
        return value

    def _mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[str, Any]:
        seen: dict[str, Mark] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                name = key_node.value
                here = Mark.of(key_node.start_mark)
                if name in seen:
                    first = seen[name]
                    self.error(here, _duplicate_message(path, name, first), "duplicate-key")
                else:
                    seen[name] = here
        try:
            self.loader.flatten_mapping(node)
        except yaml.constructor.ConstructorError as exc:
            mark = Mark.of(exc.problem_mark or node.start_mark)
            self.error(mark, f"cannot merge: {exc.problem}", "yaml")
        result: dict[str, Any] = {}
        explicit_done: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(Mark.of(key_node.start_mark), "a key must be plain text, not a list "
                           "or mapping", "yaml")
                continue
            name = key_node.value
            here = Mark.of(key_node.start_mark)
            if name in explicit_done:
                continue  # a duplicate (reported above): keep the first definition
            if seen.get(name) == here:
                explicit_done.add(name)
            child = (*path, name)
            result[name] = self.build(value_node, child)
            self.marks.keys[child] = here
        return result


def _duplicate_message(path: JsonPath, name: str, first: Mark) -> str:
    if path == ("nodes",):
        return (f"duplicate node name '{name}' (first defined at {first.line}:{first.col}); "
                "node names must be unique: rename or remove one of them")
    where = "the top level" if not path else "'" + ".".join(str(p) for p in path) + "'"
    return (f"duplicate key '{name}' in {where} (first at {first.line}:{first.col}); YAML would "
            "silently keep only the last one: remove one of them")

"""Diagnostics: one finding about a topology file, with the position a person should look at.

Every check returns diagnostics instead of raising, so one ``validate`` run reports every
problem at once (as Vector's config compiler does). Positions are 1-based line and column,
taken from the YAML parser's marks.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterable


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """A problem at ``file:line:col``; ``code`` names the check (stable, for tools and tests)."""

    severity: Severity
    file: str
    line: int
    col: int
    message: str
    code: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_text(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity.value}: {self.message}"

    def to_github(self) -> str:
        """A GitHub Actions workflow command (``::error file=…,line=…,col=…::message``)."""
        message = _gh_escape(self.message, data=True)
        return (
            f"::{self.severity.value} file={_gh_escape(self.file)},line={self.line},"
            f"col={self.col},title={_gh_escape(self.code)}::{message}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "code": self.code,
        }


def _gh_escape(text: str, *, data: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if not data:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """File order, then position; identical findings reported once."""
    unique = dict.fromkeys(diagnostics)
    return sorted(unique, key=lambda d: (d.file, d.line, d.col, d.severity.value, d.message))


def has_errors(diagnostics: Iterable[Diagnostic], *, strict: bool = False) -> bool:
    """True when the diagnostics fail validation (warnings count only when ``strict``)."""
    return any(d.is_error or strict for d in diagnostics)


def format_diagnostics(diagnostics: Iterable[Diagnostic], fmt: str = "text") -> str:
    """Render diagnostics as ``text`` lines, a ``json`` array or ``github`` annotations."""
    items = list(diagnostics)
    if fmt == "json":
        return json.dumps([d.to_dict() for d in items], indent=2, sort_keys=True) + "\n"
    render = Diagnostic.to_github if fmt == "github" else Diagnostic.to_text
    return "".join(render(d) + "\n" for d in items)


def summary(diagnostics: Iterable[Diagnostic], files: int) -> str:
    items = list(diagnostics)
    errors = sum(d.is_error for d in items)
    warnings = len(items) - errors

    def plural(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return f"{plural(errors, 'error')}, {plural(warnings, 'warning')} in {plural(files, 'file')}"

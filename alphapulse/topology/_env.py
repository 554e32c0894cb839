"""Environment interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}`` and ``$$``.

``${VAR:-default}`` uses the default when VAR is unset or empty, ``${VAR-default}`` only when it
is unset (the shell's and docker compose's rules). ``$$`` writes a literal ``$``. The topology
loader resolves references at load time, except in secret params, which keep their template so
no secret value ever lands in a plan; the node host resolves those from its own environment with
:func:`interpolate`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

_TOKEN = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}|\$\{"
)


class EnvSyntaxError(ValueError):
    """A ``${`` that does not start a valid reference; ``offset`` is where in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class UnsetVariable(KeyError):
    """A referenced variable is unset and has no default."""

    def __init__(self, name: str, offset: int) -> None:
        super().__init__(name)
        self.name = name
        self.offset = offset


@dataclasses.dataclass(frozen=True)
class EnvRef:
    """One ``${...}`` reference inside a string."""

    name: str
    default: str | None
    """The default text, or None when the reference has none."""
    empty_is_unset: bool
    offset: int
    text: str


def find_refs(text: str) -> list[EnvRef]:
    """Every reference in ``text``; raises :class:`EnvSyntaxError` on a malformed ``${``."""
    refs = []
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token == "$$":
            continue
        if match.group("name") is None:
            raise EnvSyntaxError(
                "malformed environment reference: write ${NAME}, ${NAME:-default}, or $$ for a "
                "literal '$' (NAME is letters, digits and '_', not starting with a digit)",
                match.start(),
            )
        op = match.group("op")
        refs.append(EnvRef(
            name=match.group("name"),
            default=match.group("default") if op else None,
            empty_is_unset=op == ":-",
            offset=match.start(),
            text=token,
        ))
    return refs


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve every reference in ``text`` from ``env``.

    Raises :class:`UnsetVariable` for the first unset variable without a default and
    :class:`EnvSyntaxError` for a malformed reference.
    """
    find_refs(text)  # syntax first, so the error is about the text and not the environment

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        op = match.group("op")
        value = env.get(name)
        if op == ":-" and not value:
            return match.group("default")
        if op == "-" and value is None:
            return match.group("default")
        if value is None:
            raise UnsetVariable(name, match.start())
        return value

    return _TOKEN.sub(replace, text)


def has_refs(text: str) -> bool:
    return "$" in text and _TOKEN.search(text) is not None


def single_ref(text: str) -> EnvRef | None:
    """The reference when ``text`` is exactly one ``${...}`` and nothing else."""
    try:
        refs = find_refs(text)
    except EnvSyntaxError:
        return None
    if len(refs) == 1 and refs[0].offset == 0 and refs[0].text == text:
        return refs[0]
    return None

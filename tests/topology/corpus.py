"""Helpers for the topology test corpus: files that say what diagnostics they expect.

Expected diagnostics live in ``invalid/expected.txt``: a ``== FILE`` line, then one
``LINE:COL: error|warning: message`` line per diagnostic, in order. Each file may start with:

* ``# env: NAME=value`` — the environment the file is loaded with (nothing else is set);
* ``# run-dir: BASE`` — the run-directory base (default ``/tmp/ap``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

HERE = Path(__file__).parent
INVALID = HERE / "invalid"
VALID = HERE / "valid"
DEFAULT_BASE = "/tmp/ap"


@dataclasses.dataclass
class Case:
    path: Path
    expected: list[str]
    env: dict[str, str]
    run_dir: str


def read_case(path: Path) -> Case:
    env, run_dir = {}, DEFAULT_BASE
    expected = expectations().get(path.name, [])
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# env: "):
            name, _, value = line.removeprefix("# env: ").partition("=")
            env[name] = value
        elif line.startswith("# run-dir: "):
            run_dir = line.removeprefix("# run-dir: ")
    return Case(path, expected, env, run_dir)


def render(diagnostics) -> list[str]:
    return [f"{d.line}:{d.col}: {d.severity.value}: {d.message}" for d in diagnostics]


def expectations() -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (INVALID / "expected.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("== "):
            current = result.setdefault(line[3:].strip(), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return result

"""Validate several files at once: each on its own, then resources they would share."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from alphapulse.topology._diagnostics import Diagnostic, Severity, sort_diagnostics
from alphapulse.topology._load import load_topology
from alphapulse.topology._model import Topology


def validate(
    paths: Iterable[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    run_dir: str | None = None,
) -> tuple[list[Topology], list[Diagnostic]]:
    """Check every file, then that no two topologies claim the same run directory (and so the
    same sockets). Returns the valid topologies and all diagnostics in file order."""
    topologies: list[Topology] = []
    diagnostics: list[Diagnostic] = []
    seen_files: set[str] = set()
    for path in paths:
        absolute = os.path.abspath(os.fspath(path))
        if absolute in seen_files:
            continue
        seen_files.add(absolute)
        topology, found = load_topology(path, env=env, run_dir=run_dir)
        diagnostics += found
        if topology is not None:
            topologies.append(topology)
    claimed: dict[str, Topology] = {}
    for topology in topologies:
        first = claimed.setdefault(topology.run_dir, topology)
        if first is topology:
            continue
        mark = topology.marks.value(("topology",))
        where = first.marks.value(("topology",))
        diagnostics.append(Diagnostic(
            Severity.ERROR, topology.file, mark.line, mark.col,
            f"topology '{topology.name}' would use run directory {topology.run_dir}, already "
            f"claimed by {first.file}:{where.line}:{where.col}; two topologies would share "
            "sockets and supervisord programs: give one of them another name",
            "run-dir-conflict"))
    conflicted = {d.file for d in diagnostics if d.code == "run-dir-conflict"}
    return [t for t in topologies if t.file not in conflicted], sort_diagnostics(diagnostics)

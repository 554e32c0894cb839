"""Nodes running code that changed on disk since they started, which ``apply`` restarts.

The plan's fingerprints see the file, not the code: after an upgrade, or an edit of a kind's
module, every node would keep running what it loaded at start, and ``apply`` would call the
topology up to date. Each node process knows which module files it loaded and whether they
changed since (``runtime/_code.py``, the ``code`` op of its control socket); ``apply`` asks every
running node it would keep and restarts those that say so, as it does a node whose secret
changed (``_secrets``). A node that does not answer (busy starting, or older than this op) is
left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alphapulse.runtime import ControlError, request

CODE_TIMEOUT = 5.0
"""how long a node may take to stat its module files (a few ms; more on a loaded machine)"""
NAMED_FILES = 3
"""changed files named per node in what apply prints; the rest are counted"""


def changed_code(control: str, timeout: float = CODE_TIMEOUT) -> list[str] | None:
    """The changed files a running node names (``[]``: none), or None when it cannot say."""
    try:
        reply = request(control, "code", timeout=timeout)
    except ControlError:
        return None
    return list(reply.get("changed", [])) if reply.get("tracked") else None


def code_changes(plan: dict[str, Any], nodes: Iterable[str], notes: list[str], verb: str = "restarted") -> set[str]:
    """Of ``nodes`` (running), those whose code changed since they started; why goes into ``notes``."""
    changed: set[str] = set()
    for node in sorted(nodes):
        files = changed_code(plan["nodes"][node]["sockets"]["control"])
        if files:
            changed.add(node)
            notes.append(f"{node} {verb}: its code changed since it started ({describe_files(files)})")
    return changed


def describe_files(files: list[str]) -> str:
    """``a.py, b.py, c.py and 4 more``."""
    named = ", ".join(files[:NAMED_FILES])
    return f"{named} and {len(files) - NAMED_FILES} more" if len(files) > NAMED_FILES else named

"""``apply --watch``: re-apply a topology file on every saved edit, debounced.

Polls the file's content (no inotify dependency; a topology file is tiny). An edit is applied
once the file has been quiet for ``debounce`` seconds; an invalid edit is reported with its
``file:line:col`` diagnostics and the running system is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def watch(
    path: Path,
    on_change: Callable[[], None],
    *,
    poll: float = 0.2,
    debounce: float = 0.3,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Call ``on_change`` after each settled change of ``path`` until ``stop()`` is true."""
    applied = file_digest(path)
    pending: str | None = None
    changed_at = 0.0
    while not stop():
        time.sleep(poll)
        digest = file_digest(path)
        now = time.monotonic()
        if digest != (pending or applied):
            pending, changed_at = digest, now
            continue
        if pending is not None and now - changed_at >= debounce:
            applied, pending = pending, None
            on_change()

"""``apply --watch``: re-apply a topology file on every saved edit, debounced.

Polls the file's content (no inotify dependency; a topology file is tiny). An edit is applied
once the file has been quiet for ``debounce`` seconds; an invalid edit is reported with its
``file:line:col`` diagnostics and the running system is left exactly as it was. The supervised
watcher (``_watcher``) records what became of each edit here, for ``status``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from alphapulse.supervise._supervisor import write_atomically
from alphapulse.topology import WATCH_PROCESS, state_file


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


@dataclasses.dataclass(frozen=True)
class WatchOutcome:
    """What became of the file's last version the watcher looked at."""

    at: float
    """when (Unix time)"""
    outcome: str
    """``applied``, ``unchanged``, ``refused`` (invalid: nothing changed), ``failed`` (valid, but
    supervisord could not be changed) or ``handed over`` (an edit of the watcher itself)"""
    lines: tuple[str, ...] = ()
    """what ``apply`` printed: the changes, or the diagnostics of a refused edit"""
    succeeded_at: float | None = None
    """when the file last took (this outcome's time if it did, else the one before's)"""
    cause: str = "edit"
    """``edit`` (a saved change) or ``start`` (the watcher applying the file as it found it when it
    started: an edit made while no watcher ran, or none)"""

    @property
    def succeeded(self) -> bool:
        """The file as it is now runs (or is on its way: handed over); refused and failed did not take."""
        return self.outcome in ("applied", "unchanged", "handed over")

    def after(self, previous: WatchOutcome | None) -> WatchOutcome:
        """This outcome with ``succeeded_at`` carried on from the one before when it did not take."""
        succeeded_at = self.at if self.succeeded else (previous.succeeded_at if previous else None)
        return dataclasses.replace(self, succeeded_at=succeeded_at)

    def summary(self) -> str:
        """One line for ``status``: when, what, and what changed (or the first line of why not)."""
        today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", time.localtime(self.at))
        when = time.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        lines = [" ".join(line.split()) for line in self.lines if line.strip()]
        if self.outcome in ("applied", "unchanged"):
            detail = "; ".join(line for line in lines if not line.startswith(("unchanged ", "topology ")))
        else:
            detail = lines[0] if lines else ""
        label = "last edit" if self.cause == "edit" else "at start"
        return f"{label} {when} {self.outcome}" + (f": {detail}" if detail else "")

    def replaces(self, previous: WatchOutcome | None) -> bool:
        """Does this outcome take the place of ``previous`` in the record? A start that found the
        file as it was last applied says nothing new about an edit: that edit's outcome stands."""
        quiet_start = self.cause == "start" and self.outcome == "unchanged"
        return previous is None or previous.cause == "start" or not quiet_start


def outcome_file(run_dir: str | Path) -> Path:
    return Path(state_file(str(run_dir), WATCH_PROCESS))


def read_outcome(run_dir: str | Path) -> WatchOutcome | None:
    """The watcher's last outcome (None: it has not applied anything yet, or the record is unreadable)."""
    try:
        data = json.loads(outcome_file(run_dir).read_text())
        succeeded_at = data.get("succeeded_at")
        return WatchOutcome(float(data["at"]), str(data["outcome"]), tuple(str(x) for x in data["lines"]),
                            None if succeeded_at is None else float(succeeded_at), str(data.get("cause", "edit")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_outcome(run_dir: str | Path, outcome: WatchOutcome) -> None:
    path = outcome_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, json.dumps(dataclasses.asdict(outcome)) + "\n")

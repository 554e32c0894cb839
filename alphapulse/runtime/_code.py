"""Which code a node process runs, and whether its files changed on disk since it loaded them.

A node imports its code once, at start: editing the kind's file or upgrading a package afterwards
changes nothing in the running process, and the node keeps running the old code until something
restarts it. A crash then brings up the new code in one node while the others run the old.
So each node notes, once its start-up imports are done, every module file it has loaded:
- size and modification time, for every file;
- a digest of the contents, for its own code (the ``alphapulse`` package and its kind's top-level
  package), so a checkout that rewrote a file with the same bytes is no change.

Asked (``code`` on its control socket), it says which of them changed. ``apply`` restarts such
a node, and ``status`` names it. Modules first imported later (a kind may import a library on
first use) are noted when the node is first asked, as they are then.

Sans-IO apart from the file system: no sockets, no event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator


@dataclasses.dataclass(frozen=True)
class _Noted:
    size: int
    mtime_ns: int
    digest: bytes | None
    """the contents' digest, for the node's own code (None: compared by size and time only)"""


class LoadedCode:
    """The module files a process has loaded, as they were when first noted."""

    def __init__(self, own_roots: Iterable[str]) -> None:
        self._own_roots = tuple(os.path.join(os.path.realpath(root), "") for root in own_roots)
        self._noted: dict[str, _Noted] = {}
        self.note_loaded()

    def __len__(self) -> int:
        return len(self._noted)

    def note_loaded(self) -> None:
        """Note the module files loaded since the last call, as they are now."""
        for path in _module_files():
            if path not in self._noted:
                noted = self._look(path)
                if noted is not None:
                    self._noted[path] = noted

    def changed(self) -> list[str]:
        """The noted files that are gone or whose contents changed, sorted (absolute paths)."""
        self.note_loaded()
        out = []
        for path, noted in self._noted.items():
            try:
                now = os.stat(path)
            except OSError:
                out.append(path)
                continue
            if (now.st_size, now.st_mtime_ns) == (noted.size, noted.mtime_ns):
                continue
            if noted.digest is not None and now.st_size == noted.size and _digest(path) == noted.digest:
                continue  # rewritten with the same bytes
            out.append(path)
        return sorted(out)

    def _look(self, path: str) -> _Noted | None:
        try:
            stat = os.stat(path)
            own = os.path.realpath(path).startswith(self._own_roots)
            return _Noted(stat.st_size, stat.st_mtime_ns, _digest(path) if own else None)
        except OSError:
            return None  # not a file (frozen, built in) or already gone: nothing to compare


def package_root(module_name: str) -> str | None:
    """The directory of ``module_name``'s top-level package (or of the module, when it is one
    file at the top level); None when it was not loaded from files."""
    top = sys.modules.get(module_name.partition(".")[0])
    paths = list(getattr(top, "__path__", None) or [])
    if paths:
        return str(paths[0])
    file = getattr(top, "__file__", None)
    return os.path.dirname(file) if file else None


def display_path(path: str) -> str:
    """``path`` relative to the import path entry it was loaded from (``nodes/relay.py``,
    ``numpy/__init__.py``), else as it is."""
    entries = sorted((os.path.join(os.path.abspath(p or "."), "") for p in sys.path), key=len, reverse=True)
    for entry in entries:
        if path.startswith(entry):
            return path[len(entry):]
    return path


def _module_files() -> Iterator[str]:
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.isabs(file):
            yield file


def _digest(path: str) -> bytes:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).digest()

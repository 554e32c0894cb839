"""Files that survive a crash: a rename made durable, a small file replaced whole or not at all.

The sinks that keep the stream (``sink.recorder``, ``sink.parquet``) write their data files
their own way; these are the two steps they share for the small files beside them (a commit
point, a checkpoint of positions).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader (or a restart after a crash) sees the old file or
    the new one, never a part. The temporary name starts with a dot, which readers skip."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)

"""Where a restarted ``sink.parquet`` left off: the highest sequence of each source it stored.

What is stored is what the tables' newest partitions hold (every row keeps its message's
``source`` and ``sequence``) plus what the write-ahead log holds that no flush committed yet (the
writer replays it when it opens). The host starts the inputs after that (``resume_positions``),
so a restart's stretch is asked for upstream rather than missing from the tables. Only the newest
partition of each table is read; a source whose rows all lie further back is found in the
checkpoint each flush writes (``.positions.json``: every source ever stored, see
``alphapulse.runtime._resume``). Positions can only lag what is stored (or what the WAL will
store again), never lead it, so nothing is stored twice.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pyarrow.parquet as pq

from alphapulse.runtime import merge_positions, positions_in_frame_files, positions_of, read_positions
from nodes._parquet._store import DAY, FINAL, PART
from nodes._parquet._wal import WAL_NAME


def stored_positions(base: Path, tables: tuple[str, ...]) -> dict[int, int]:
    positions = read_positions(base)
    for table in tables:
        for path in _newest_partition(base / table):
            columns = pq.read_table(path, columns=["source", "sequence"])
            merge_positions(positions, positions_of(columns["source"].to_numpy(), columns["sequence"].to_numpy()))
    merge_positions(positions, positions_in_frame_files(_pending_wal(base / "_wal")))
    return positions


def _newest_partition(directory: Path) -> list[Path]:
    """The files (compacted and parts) of a table's newest time bucket."""
    if not directory.is_dir():
        return []
    days = sorted(p for p in directory.iterdir() if DAY.match(p.name))
    if not days:
        return []
    files = []
    for path in days[-1].iterdir():
        match = PART.match(path.name) or FINAL.match(path.name)
        if match:
            files.append((match.group("stem"), path))
    newest = max((stem for stem, _ in files), default=None)
    return sorted(path for stem, path in files if stem == newest)


def _pending_wal(directory: Path) -> list[Path]:
    """WAL files after the checkpoint (what the last commit did not cover)."""
    if not directory.is_dir():
        return []
    checkpoint = 0
    with contextlib.suppress(FileNotFoundError, ValueError):
        checkpoint = int((directory / "checkpoint").read_text().strip() or 0)
    pending = []
    for path in directory.iterdir():
        match = WAL_NAME.match(path.name)
        if match and int(match.group(1)) > checkpoint:
            pending.append((int(match.group(1)), path))
    return [path for _, path in sorted(pending)]

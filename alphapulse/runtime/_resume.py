"""Where a restarted consumer left off: the last sequence of each source in files it wrote.

A consumer that keeps the stream (a recorder's files, a Parquet writer's write-ahead log and
tables) knows, after a restart, exactly what it has; its ``resume_positions`` hook hands that to
the host, which starts its input links there (``SequenceTracker.resume_from``), so what came
while it was down is asked for upstream instead of silently skipped.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from alphapulse import protocol


def merge_positions(into: dict[int, int], more: Mapping[int, int]) -> dict[int, int]:
    """Keep the later sequence of each source (a later epoch sorts higher: epochs come from the
    start time)."""
    for source, sequence in more.items():
        if sequence > into.get(source, 0):
            into[source] = sequence
    return into


def positions_of(sources: np.ndarray, sequences: np.ndarray) -> dict[int, int]:
    """source -> highest sequence among these frames' (or rows') header columns."""
    if not len(sources):
        return {}
    order = np.lexsort((sequences, sources))  # by source, then sequence: each source's last is its highest
    sources, sequences = sources[order], sequences[order]
    last = np.flatnonzero(np.append(sources[1:] != sources[:-1], True))
    return dict(zip(sources[last].tolist(), sequences[last].tolist(), strict=True))


def positions_in_frame_files(paths: Iterable[Path]) -> dict[int, int]:
    """source -> highest sequence of the whole valid frames in these files (a torn frame at the
    end of a file being written when the process died does not count)."""
    found_positions: dict[int, int] = {}
    for path in paths:
        if not path.stat().st_size:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            buf = np.frombuffer(view, np.uint8)
            found = protocol.scan_frames(buf, final=True)
            if len(found.offsets):
                sources, sequences = protocol.header_columns(buf, found.offsets)[:2]
                merge_positions(found_positions, positions_of(sources, sequences))
            del buf, found  # the map cannot close while a view of it exists
    return found_positions

"""Where a restarted consumer left off: the last sequence of each source in files it wrote.

A consumer that keeps the stream (a recorder's files, a Parquet writer's write-ahead log and
tables) knows, after a restart, exactly what it has; its ``resume_positions`` hook hands that to
the host, which starts its input links there (``SequenceTracker.resume_from``), so what came
while it was down is asked for upstream instead of silently skipped.

Reading back the newest files finds where each source that spoke lately left off, but not a
source whose last messages lie further back (a sparse signal source, a venue down for hours): it
would join afresh at the relay's head, and what it sent while the consumer was down would be a
silent hole. So such a consumer also keeps a checkpoint, ``.positions.json`` beside its data,
rewritten whole each time data becomes durable (a finished file, a committed flush): every
source it ever stored, however long ago. The two are merged; neither can lead what is stored.
"""

from __future__ import annotations

import json
import logging
import mmap
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from alphapulse import protocol
from alphapulse.runtime._durable import write_file_atomically

log = logging.getLogger("alphapulse.resume")
POSITIONS_FILE = ".positions.json"
"""the checkpoint's name in a consumer's data directory (a dot: readers of the data skip it)"""


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


SCAN_BYTES = 4 << 20
"""how much of a file one scan takes: the scan's arrays (offsets, sizes, header columns) cost
~100 bytes per 72-byte frame, so a whole 68 MB recording at once took ~50 MB more of the
recorder's heap at each rotation, kept by the allocator afterwards"""


def frames_in_chunks(buf: np.ndarray, chunk: int = SCAN_BYTES) -> Iterator[tuple[int, np.ndarray, Any]]:
    """Scan ``buf`` (a whole file, mapped) a ``chunk`` at a time: ``(where the piece starts, the
    piece, what scan_frames found in it)`` for each piece, each frame found in exactly one piece
    (a frame cut by a piece's end is found at the start of the next). A torn frame at the very
    end is not found, as with ``final=True`` over the whole buffer."""
    at, size, window = 0, len(buf), chunk
    while at < size:
        stop = min(size, at + window)
        piece = buf[at:stop]
        found = protocol.scan_frames(piece, final=stop == size)
        yield at, piece, found
        if stop == size:
            return
        if found.end == 0:  # a frame longer than the window: take in more
            window = max(2 * window, found.need)
            continue
        at, window = at + found.end, chunk


def positions_in_frame_files(paths: Iterable[Path]) -> dict[int, int]:
    """source -> highest sequence of the whole valid frames in these files (a torn frame at the
    end of a file being written when the process died does not count)."""
    found_positions: dict[int, int] = {}
    for path in paths:
        if not path.stat().st_size:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            buf = np.frombuffer(view, np.uint8)
            for _, piece, found in frames_in_chunks(buf):
                if len(found.offsets):
                    sources, sequences = protocol.header_columns(piece, found.offsets)[:2]
                    merge_positions(found_positions, positions_of(sources, sequences))
            del buf, piece, found  # the map cannot close while a view of it exists
    return found_positions


def read_positions(directory: Path) -> dict[int, int]:
    """The positions checkpointed in ``directory``; empty when there is none. One that cannot be
    read is logged and ignored (the newest files still say where the recent sources left off)."""
    path = directory / POSITIONS_FILE
    try:
        stored = json.loads(path.read_text())
        return {int(source): int(sequence) for source, sequence in stored["positions"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring %s: %s: %s", path, type(exc).__name__, exc)
        return {}


def write_positions(directory: Path, positions: Mapping[int, int]) -> None:
    """Replace the checkpoint in ``directory`` with ``positions`` (atomically, durably)."""
    text = json.dumps({"version": 1, "positions": {str(s): q for s, q in sorted(positions.items())}})
    write_file_atomically(directory / POSITIONS_FILE, text.encode())

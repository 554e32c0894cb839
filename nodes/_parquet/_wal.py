"""The write-ahead log: raw frames of rows not yet in a committed Parquet part.

Files, all in ``<base>/_wal/``:

* ``wal.<generation>.frames`` — frames exactly as received, back to back (each carries its own
  CRC, so a torn tail after a crash is detected and dropped by the frame decoder). Generations
  are increasing integers (nanosecond clock, bumped past every one seen). The current file is
  appended to; a flush *rotates* it: a new generation starts (its head re-logs the
  InstrumentMapping frames, so names survive), and the old one waits for its commit.
* ``checkpoint`` — the highest generation whose rows are in committed parts. Written atomically
  (temporary file, fsync, rename, directory fsync). Every WAL file at or below it is done.
* ``lock`` — ``flock``-ed while a writer owns the base directory; a second writer is refused.

A flush writes its parts named ``.g<G>`` where G is the newest generation its rows came from,
then commits: checkpoint := G, then the WAL files <= G are deleted. After a crash, WAL files
above the checkpoint are *pending*: their frames are replayed, and any part whose generation is
at or above the oldest pending WAL is from the flush that did not commit and is deleted (its
rows are about to be written again from the WAL).

Acknowledged means: written to a WAL file and fsynced, or committed in a part. The node fsyncs
the current file every ``wal_fsync_seconds`` (0: after every block).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path

from alphapulse.runtime import fsync_directory, write_file_atomically

WAL_NAME = re.compile(r"^wal\.(\d+)\.frames$")


class WriterLocked(RuntimeError):
    """Another sink.parquet already writes to this base directory."""


class WriteAheadLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generation = 0
        """generation of the current file (0 before ``start``)"""
        self.checkpoint = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._files: dict[int, list[int]] = {}
        """generation -> [messages written, messages fsynced] for files not yet committed"""
        self.acknowledged = 0
        """messages acknowledged by this process (fsynced or committed), replayed ones included"""
        self.bytes_written = 0
        self.current_bytes = 0
        self.syncs = 0

    # -- opening and recovery ----------------------------------------------------------------
    def open(self) -> list[tuple[int, Path]]:
        """Lock the directory, forget committed and temporary files; return the pending files,
        oldest first, whose frames must be replayed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise WriterLocked(f"{self.directory.parent} is being written by another sink.parquet") from None
        checkpoint_file = self.directory / "checkpoint"
        with contextlib.suppress(FileNotFoundError):
            self.checkpoint = int(checkpoint_file.read_text().strip() or 0)
        pending = []
        for path in self.directory.iterdir():
            match = WAL_NAME.match(path.name)
            if path.name.endswith(".tmp") or (match and int(match.group(1)) <= self.checkpoint):
                path.unlink()  # unfinished, or committed
            elif match:
                pending.append((int(match.group(1)), path))
        fsync_directory(self.directory)
        pending.sort()
        self.generation = max([self.checkpoint, *(g for g, _ in pending)])
        return pending

    def adopt(self, generation: int, messages: int) -> None:
        """Count a replayed pending file: durable already, committed with the next flush."""
        self._files[generation] = [messages, messages]
        self.acknowledged += messages

    def start(self, preamble: bytes, preamble_messages: int) -> None:
        """Begin a new current file whose head is ``preamble`` (fsynced before it is used)."""
        generation = max(time.time_ns(), self.generation + 1)
        path = self.directory / f"wal.{generation}.frames"
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write_all(fd, preamble)
            os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):  # a full disk must not fill up with failed starts
                tmp.unlink()
            raise
        fsync_directory(self.directory)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self.generation = generation
        self._files[generation] = [preamble_messages, preamble_messages]
        self.current_bytes = len(preamble)

    # -- the hot path --------------------------------------------------------------------------
    def append(self, data: bytes | memoryview, messages: int) -> None:
        """Append whole frames, or nothing: a write that fails part way (a full disk) is cut back
        off, so no torn frame sits in the middle of the file once later appends follow it."""
        try:
            _write_all(self._fd, data)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.current_bytes)
            raise
        self._files[self.generation][0] += messages
        self.bytes_written += len(data)
        self.current_bytes += len(data)

    @property
    def started(self) -> bool:
        """Whether there is a current file to append to (a start the disk refused leaves none)."""
        return self._fd is not None

    @property
    def unsynced(self) -> int:
        written, synced = self._files.get(self.generation, (0, 0))
        return written - synced

    def sync(self) -> None:
        """fsync the current file; what was written before the call is then acknowledged.
        Safe to run in a worker thread while the node keeps appending. Without a current file
        there is nothing to fsync."""
        if self._fd is None:
            return
        counts = self._files[self.generation]
        written = counts[0]
        os.fsync(self._fd)
        self.syncs += 1
        self.acknowledged += written - counts[1]
        counts[1] = written

    # -- flushes ---------------------------------------------------------------------------------
    def rotate(self, preamble: bytes, preamble_messages: int) -> int:
        """Start a new current file; returns the generation the flush will commit."""
        flushed = self.generation
        self.start(preamble, preamble_messages)
        return flushed

    def commit(self, generation: int) -> None:
        """Rows from every file <= ``generation`` are in durable parts: checkpoint, then delete them."""
        write_file_atomically(self.directory / "checkpoint", f"{generation}\n".encode())
        self.checkpoint = generation
        for old in sorted(g for g in self._files if g <= generation):
            written, synced = self._files.pop(old)
            self.acknowledged += written - synced
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"wal.{old}.frames").unlink()
        fsync_directory(self.directory)

    def close(self) -> None:
        """Close the files (a crash does the same); pending data stays for the next start."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


def _write_all(fd: int | None, data: bytes | memoryview) -> None:
    if fd is None:
        raise RuntimeError("the WAL is not open")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

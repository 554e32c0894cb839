"""``sink.recorder``: record the raw framed TLV stream for bit-for-bit replay.

Recording format (version 1), read by ``source.replay`` and ``alphapulse replay``:

* A recording is a directory (``path``). Each file holds the frames exactly as the node was
  handed them — the 32-byte header (magic, version, relay domain, source, sequence,
  timestamp, payload size, CRC) and the payload — back to back, with nothing added: no file
  header, no index, no padding. Frames a subscription filter excluded never reach the node, so
  they are not in the recording.
* ``rec-<YYYYMMDD>T<HHMMSS>.<ffffff>Z.frames``: a finished file, named by the UTC time it was
  opened; names sort in recording order (the recorder keeps them strictly increasing). Every
  finished file starts and ends on a frame boundary.
* ``rec-<...>.frames.open``: the file being written; at most one, the newest. A reader following
  a live recording may read it, and must expect a partial frame at its end. After a crash the
  recorder, when it starts, cuts an ``.open`` file back to the end of its last whole valid frame
  and renames it to ``.frames``.
* ``.positions.json``: the highest sequence of each source in the finished files, rewritten
  (atomically) after each file is finished; a restarted recorder resumes every source from it,
  however long ago it last spoke. Not part of the stream: readers skip names starting with a dot.
* Playing a recording back = the ``.frames`` files in name order, concatenated, through
  ``protocol.FrameDecoder``: the frames come out bit for bit as recorded, headers included.

A file is finished after ``rotate_bytes`` (split at a frame boundary, so a file exceeds it only
when one frame does) or ``rotate_seconds``; finishing fsyncs it, renames it and fsyncs the
directory. The open file is fsynced every ``fsync_seconds`` (0: after every block).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import mmap
import os
import time
from pathlib import Path

import numpy as np
import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.runtime import (
    frames_in_chunks,
    fsync_directory,
    merge_positions,
    positions_in_frame_files,
    read_positions,
    write_positions,
)

FINISHED = ".frames"
OPEN = ".frames.open"


@dataclasses.dataclass(frozen=True)
class RecorderParams:
    path: str = param(
        "recordings", doc="Directory for the rotating recording files; relative to the topology "
        "file. One recorder per directory.", minLength=1,
    )
    rotate_bytes: int = param(
        256 * 1024 * 1024, doc="Start a new file before it would exceed this many bytes.", minimum=4096,
    )
    rotate_seconds: int = param(3600, doc="Start a new file after this many seconds.", minimum=1)
    fsync_seconds: float = param(
        1.0, doc="fsync the current file at least this often; 0 fsyncs after every block.", live=True,
        minimum=0,
    )
    keep_files: int = param(
        0, doc="Delete the oldest finished files beyond this many; 0 keeps everything.", live=True,
        minimum=0,
    )


def file_name(unix_ns: int) -> str:
    """The finished name of a file opened at ``unix_ns``."""
    moment = dt.datetime.fromtimestamp(unix_ns // 1000 / 1e6, dt.UTC)
    return f"rec-{moment:%Y%m%dT%H%M%S}.{unix_ns // 1000 % 1_000_000:06d}Z{FINISHED}"


RESUME_SCAN_FILES = 4
"""How many of the newest files ``resume_positions`` reads for where each source left off."""


def last_frame_end(path: Path) -> int:
    """Where the last whole valid frame of a file ends (0 when it holds none)."""
    size = path.stat().st_size
    if not size:
        return 0
    end = 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        buf = np.frombuffer(view, np.uint8)
        for at, _piece, found in frames_in_chunks(buf):  # in bounded memory, however large the file
            if len(found.offsets):
                end = at + int(found.offsets[-1] + found.sizes[-1])
        del buf, _piece  # the map cannot close while a view of it exists
    return end


class _File:
    """One recording file being written."""

    def __init__(self, directory: Path, unix_ns: int, opened_at: float) -> None:
        self.final = directory / file_name(unix_ns)
        self.path = self.final.with_name(self.final.name[: -len(FINISHED)] + OPEN)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.opened_at = opened_at
        self.bytes = 0
        self.messages = 0
        self.synced_bytes = 0
        self.finished = False

    def write(self, data: memoryview, messages: int) -> None:
        view = data
        while view:
            view = view[os.write(self.fd, view) :]
        self.bytes += len(data)
        self.messages += messages

    def sync(self) -> None:
        """Safe in a worker thread while the node keeps writing: covers what was written before."""
        written = self.bytes
        os.fsync(self.fd)
        self.synced_bytes = written

    def finish(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)
        os.replace(self.path, self.final)
        fsync_directory(self.final.parent)
        self.finished = True


@node_kind("sink.recorder", emits=(), accepts=None,
           example={"path": "recordings/demo", "rotate_seconds": 600})
class Recorder(Node):
    """Recorder: writes frames with their headers, unchanged, to rotating files.

    ``source.replay`` plays them back bit-for-bit, so any incident can be reproduced.
    """

    Params = RecorderParams
    keeps_placeholders = True
    """Record the 32-byte placeholders of frames a filtered input did not carry, so every
    source's sequence stays contiguous in the recording and a replay shows no false gaps."""

    def __init__(self, params: RecorderParams) -> None:
        super().__init__(params)
        self.directory = Path(params.path)
        self.current: _File | None = None
        self._finishing: list[_File] = []
        self._early: list = []
        self._wake = trio.Event()
        self._last_name = ""
        self.files_finished = 0
        self.recovered = 0
        self._stored: dict[int, int] | None = None
        """where the finished files leave off per source (``.positions.json``; see ``_resume``)"""

    # -- files ------------------------------------------------------------------------------------
    def resume_positions(self) -> dict[int, int]:
        """Where the recording left off, per source (the host starts the inputs from there): a
        restarted recorder asks upstream for what came while it was down instead of leaving a
        silent hole in the recording. The newest few files, and the checkpoint of every file
        finished before them (a source that has been quiet for many files is still known)."""
        self._stored = self._positions_on_disk()
        return dict(self._stored)

    def _positions_on_disk(self) -> dict[int, int]:
        if not self.directory.is_dir():
            return {}
        files = sorted(self.directory.glob("rec-*.frames*"), key=lambda p: p.name.removesuffix(".open"))
        return merge_positions(read_positions(self.directory), positions_in_frame_files(files[-RESUME_SCAN_FILES:]))

    def _checkpoint(self, finished: Path) -> None:
        """After ``finished`` is durable: the checkpoint takes where it leaves off (a worker thread)."""
        if self._stored is None:
            self._stored = self._positions_on_disk()
        merge_positions(self._stored, positions_in_frame_files([finished]))
        write_positions(self.directory, self._stored)

    def open(self, ctx) -> None:
        """Finish what a crash left open, then start a file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob(f"rec-*{OPEN}")):
            end = last_frame_end(path)
            if end:
                cut = path.stat().st_size - end
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                os.replace(path, path.with_name(path.name[: -len(OPEN)] + FINISHED))
                ctx.counters["recovered.files"] += 1
                ctx.counters["recovered.bytes_cut"] += cut
                ctx.log.info("recovered %s: cut %d bytes of a partial frame", path.name, cut)
            else:
                path.unlink()
            self.recovered += 1
        fsync_directory(self.directory)
        existing = sorted(p.name for p in self.directory.glob(f"rec-*{FINISHED}"))
        self._last_name = existing[-1] if existing else ""
        self._start(ctx)
        early, self._early = self._early, []
        for block in early:
            self.handle_block(block, ctx)

    def _start(self, ctx) -> None:
        unix_ns = time.time_ns()
        while file_name(unix_ns) <= self._last_name:  # names must sort in recording order
            unix_ns += 1000
        self.current = _File(self.directory, unix_ns, trio.current_time())
        self._last_name = self.current.final.name
        ctx.counters["files.opened"] += 1

    def _rotate(self, ctx) -> None:
        """Switch to a new file now; the run loop finishes the old one (fsync, rename)."""
        self._finishing.append(self.current)
        self._start(ctx)
        self._wake.set()

    # -- the push path -----------------------------------------------------------------------------
    def handle_block(self, block, ctx) -> None:
        if self.current is None:  # inputs can deliver before run() has opened the directory
            self._early.append(block)
            return
        data = memoryview(block.data)
        ends = (block.offsets + block.sizes).astype(np.int64)
        limit = self.params.rotate_bytes
        first, n = 0, len(block)
        while first < n:
            start = int(block.offsets[first])
            fit = int(np.searchsorted(ends[first:] - start, limit - self.current.bytes, side="right"))
            if fit == 0 and self.current.bytes:
                self._rotate(ctx)
                continue
            fit = max(fit, 1)  # a frame larger than a whole file goes alone into a fresh one
            end = int(ends[first + fit - 1])
            self.current.write(data[start:end], fit)
            ctx.counters["recorded.messages"] += fit
            ctx.counters["recorded.bytes"] += end - start
            first += fit
        if self.params.fsync_seconds == 0:
            self.current.sync()
            ctx.counters["fsyncs"] += 1

    # -- the loop: time rotation, fsync, finishing -----------------------------------------------------
    async def run(self, ctx):
        self.open(ctx)
        next_sync = trio.current_time() + self.params.fsync_seconds
        while True:
            rotate_at = self.current.opened_at + self.params.rotate_seconds
            sync_at = next_sync if self.params.fsync_seconds and self.current.synced_bytes < self.current.bytes \
                else float("inf")
            with trio.move_on_at(min(rotate_at, sync_at)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= rotate_at and self.current.bytes:
                self._rotate(ctx)
            elif now >= rotate_at:
                self.current.opened_at = now  # nothing recorded: keep the empty file open
            if now >= sync_at:
                await trio.to_thread.run_sync(self.current.sync)
                ctx.counters["fsyncs"] += 1
                next_sync = now + self.params.fsync_seconds
            await self._finish_pending(ctx)

    async def _finish_pending(self, ctx) -> None:
        if not self._finishing:
            return
        while self._finishing:
            done = self._finishing[0]
            if not done.finished:  # a cancel can land before the thread starts: aclose retries
                await trio.to_thread.run_sync(done.finish)
            await trio.to_thread.run_sync(self._checkpoint, done.final)
            self._finishing.pop(0)
            self.files_finished += 1
            ctx.counters["files.finished"] += 1
        if self.params.keep_files:
            finished = sorted(self.directory.glob(f"rec-*{FINISHED}"))
            for old in finished[: max(0, len(finished) - self.params.keep_files)]:
                old.unlink()
                ctx.counters["files.deleted"] += 1

    def reconfigure(self, params: RecorderParams) -> None:
        super().reconfigure(params)
        self._wake.set()

    async def aclose(self, ctx) -> None:
        """Finish every file, the current one included (an empty one is removed)."""
        if self.current is None:
            return
        current, self.current = self.current, None
        if current.bytes:
            self._finishing.append(current)
        else:
            os.close(current.fd)
            with contextlib.suppress(FileNotFoundError):
                current.path.unlink()
        await self._finish_pending(ctx)

    def statistics(self) -> dict:
        current = self.current
        return {
            "directory": str(self.directory),
            "current_file": current.path.name if current else None,
            "current_bytes": current.bytes if current else 0,
            "current_messages": current.messages if current else 0,
            "unsynced_bytes": current.bytes - current.synced_bytes if current else 0,
            "files_finished": self.files_finished,
            "files_recovered": self.recovered,
        }


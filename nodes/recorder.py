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

A write that fails (a full disk, a quota) is cut back off the file, so the file still ends on
a frame boundary. The frames it did not write, and every block after them, wait in memory in
order (up to ``backlog_bytes``) and are written once the disk takes them again, tried every
``WRITE_RETRY_SECONDS``: a disk that fills and is freed within that bound leaves no hole. Beyond
it, frames are dropped and counted (``dropped.backlog_full``); the recording then shows that
stretch as a gap in each source's sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import mmap
import os
import time
from collections import deque
from pathlib import Path

import numpy as np
import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.runtime import (
    StalledWrites,
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
    backlog_bytes: int = param(
        64 * 1024 * 1024, doc="While writes fail (a full disk), hold up to this many bytes of frames in "
        "memory, in order, and write them once the disk takes them again; beyond it frames are dropped "
        "and counted (dropped.backlog_full). 0 holds none.", live=True, minimum=0,
    )


WRITE_RETRY_SECONDS = 1.0
"""How soon a recorder whose write failed tries its backlog again."""


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


@dataclasses.dataclass(frozen=True)
class _Frames:
    """Whole frames back to back in ``data``, with where each starts and ends."""

    data: memoryview | bytes
    offsets: np.ndarray
    ends: np.ndarray

    @property
    def count(self) -> int:
        return len(self.offsets)

    def tail(self, first: int) -> _Frames:
        """The frames from ``first`` on, positions counted from the first of them."""
        start = int(self.offsets[first])
        return _Frames(self.data[start:int(self.ends[-1])], self.offsets[first:] - start, self.ends[first:] - start)

    def copy(self) -> _Frames:
        return _Frames(bytes(self.data), self.offsets.copy(), self.ends.copy())


class _Unwritten(Exception):
    """A write failed: the frames from ``first`` on are not in the file."""

    def __init__(self, first: int, cause: OSError) -> None:
        super().__init__(first, cause)
        self.first, self.cause = first, cause


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
        self.torn = False
        """a failed write may have left part of a frame past ``bytes``"""

    def write(self, data: memoryview, messages: int) -> None:
        """Append whole frames, or nothing: a write that fails part way (a full disk) is cut
        back off, so the file never holds a torn frame that later frames would follow."""
        if self.torn:
            self._cut_back()
        view = data
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            self.torn = True
            with contextlib.suppress(OSError):  # still torn: the next write cuts it first
                self._cut_back()
            raise
        self.bytes += len(data)
        self.messages += messages

    def _cut_back(self) -> None:
        os.ftruncate(self.fd, self.bytes)
        self.torn = False

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
        self._backlog: deque[_Frames] = deque()
        """frames a failed write left unwritten, and every block after them, in order"""
        self._backlog_bytes = self._backlog_messages = 0
        self._stalled = StalledWrites()

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
        """Switch to a new file now; the run loop finishes the old one (fsync, rename). When the
        new file cannot be made (a full disk), the old one stays the one written to."""
        old = self.current
        self._start(ctx)
        self._finishing.append(old)
        self._wake.set()

    # -- the push path -----------------------------------------------------------------------------
    def handle_block(self, block, ctx) -> None:
        if self.current is None:  # inputs can deliver before run() has opened the directory
            self._early.append(block)
            return
        frames = _Frames(memoryview(block.data), block.offsets.astype(np.int64),
                         (block.offsets + block.sizes).astype(np.int64))
        if self._backlog:  # nothing overtakes the frames waiting for the disk
            self._hold(frames, ctx)
            return
        try:
            self._write(frames, ctx)
        except _Unwritten as failed:
            self._write_failed(failed, ctx)
            self._hold(frames.tail(failed.first), ctx)
            return
        if self._stalled.failing:  # nothing was held (backlog_bytes 0): written again
            self._writes_again(ctx)
        if self.params.fsync_seconds == 0:
            self.current.sync()
            ctx.counters["fsyncs"] += 1

    def _write(self, frames: _Frames, ctx) -> None:
        """Write the frames, rotating at ``rotate_bytes``; ``_Unwritten`` says from which frame on
        they are not in the file (the file holds whole frames either way)."""
        limit = self.params.rotate_bytes
        first, n = 0, frames.count
        try:
            while first < n:
                start = int(frames.offsets[first])
                fit = int(np.searchsorted(frames.ends[first:] - start, limit - self.current.bytes, side="right"))
                if fit == 0 and self.current.bytes:
                    self._rotate(ctx)
                    continue
                fit = max(fit, 1)  # a frame larger than a whole file goes alone into a fresh one
                end = int(frames.ends[first + fit - 1])
                self.current.write(frames.data[start:end], fit)
                ctx.counters["recorded.messages"] += fit
                ctx.counters["recorded.bytes"] += end - start
                first += fit
        except OSError as exc:
            raise _Unwritten(first, exc) from exc

    def _write_failed(self, failed: _Unwritten, ctx) -> None:
        self._stalled.failed(failed.cause, ctx, retry_seconds=WRITE_RETRY_SECONDS,
                             holding=f"recording to {self.directory} holds what arrives, in order, up to "
                             f"{self.params.backlog_bytes / 2**20:.1f} MiB")
        self._wake.set()

    def _hold(self, frames: _Frames, ctx) -> None:
        """Keep a copy (the block's buffer is the link's to reuse), or drop and count it."""
        if not frames.count:
            return
        frames = frames.tail(0)
        size = len(frames.data)
        if self._backlog_bytes + size > self.params.backlog_bytes:
            if not ctx.counters["dropped.backlog_full"]:
                ctx.log.error("recorder backlog is full (%.1f MiB): dropping what arrives until the disk takes "
                              "it; the recording will show a gap", self.params.backlog_bytes / 2**20)
            ctx.counters["dropped.backlog_full"] += frames.count
            return
        self._backlog.append(frames.copy())
        self._backlog_bytes += size
        self._backlog_messages += frames.count

    def _write_backlog(self, ctx) -> None:
        """Write what waits, oldest first, until it is all written or a write fails again."""
        while self._backlog:
            held = self._backlog[0]
            try:
                self._write(held, ctx)
            except _Unwritten as failed:
                rest = held.tail(failed.first)
                self._backlog[0] = rest
                self._backlog_bytes -= len(held.data) - len(rest.data)
                self._backlog_messages -= failed.first
                self._write_failed(failed, ctx)
                return
            self._backlog.popleft()
            self._backlog_bytes -= len(held.data)
            self._backlog_messages -= held.count
        self._writes_again(ctx)
        if self.params.fsync_seconds == 0:
            self.current.sync()
            ctx.counters["fsyncs"] += 1

    def _writes_again(self, ctx) -> None:
        self._stalled.resumed(ctx, "what the recorder held meanwhile is written, in order")

    # -- the loop: time rotation, fsync, finishing -----------------------------------------------------
    async def run(self, ctx):
        self.open(ctx)
        next_sync = trio.current_time() + self.params.fsync_seconds
        while True:
            # while writes fail, only the retry is due: a rotation waits for the backlog to be written
            rotate_at = self.current.opened_at + self.params.rotate_seconds if not self._backlog else float("inf")
            sync_at = next_sync if self.params.fsync_seconds and self.current.synced_bytes < self.current.bytes \
                else float("inf")
            retry_at = self._stalled.retry_at if self._backlog else float("inf")
            with trio.move_on_at(min(rotate_at, sync_at, retry_at)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if self._backlog and now >= self._stalled.retry_at:
                self._write_backlog(ctx)
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
            try:
                await trio.to_thread.run_sync(self._checkpoint, done.final)
            except OSError as exc:  # a full disk: the files say where they end; the next checkpoint has it all
                ctx.counters["errors.checkpoint"] += 1
                ctx.log.warning("cannot write the recording's checkpoint (%s); the next finished file's writes it",
                                exc)
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
        if self._backlog:
            self._write_backlog(ctx)
        if self._backlog:  # a restart asks upstream for them: the recording resumes from the files
            ctx.counters["dropped.backlog_at_stop"] += self._backlog_messages
            ctx.log.error("recorder stops with %d messages it could not write; its next start asks "
                          "upstream for them", self._backlog_messages)
        current, self.current = self.current, None
        if current.bytes:
            self._finishing.append(current)
        else:
            os.close(current.fd)
            with contextlib.suppress(FileNotFoundError):
                current.path.unlink()
        await self._finish_pending(ctx)

    def trouble(self) -> str:
        held, bound = self._backlog_bytes / 2**20, self.params.backlog_bytes / 2**20
        return self._stalled.trouble(self.directory, f"holding {self._backlog_messages:,} messages "
                                     f"({held:.1f} of {bound:.0f} MiB)")

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
            "backlog_bytes": self._backlog_bytes,
            "backlog_messages": self._backlog_messages,
            "write_failing_seconds": self._stalled.seconds,
        }


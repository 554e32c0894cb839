"""``sink.parquet``: durable, partitioned Parquet files, queryable within seconds.

Tables (directories): trades, quotes, book_snapshots (a row per level), book_deltas (a row per
change), bars, swaps, pool_mints, pool_burns, pool_syncs, pool_retractions, arbitrage_signals;
columns are described in ``nodes/_parquet/_tables.py``. Files::

    <path>/<table>/<YYYY-MM-DD>/<table>_<HH>.parquet          compacted once the hour is over
    <path>/<table>/<YYYY-MM-DD>/<table>_<HH>.g<G>.parquet     one flush's rows, until compacted
    <path>/_wal/                                              write-ahead log, checkpoint, lock

Query everything with ``read_parquet('<path>/trades/*/*.parquet')``: every file a reader can
see is complete (written to a hidden temporary name, fsynced, renamed).

A full disk ends nothing: a WAL append that fails is cut back off the file, and the rows stay
in the batch while their frames (and every later block's) wait in memory, in order, up to
``backlog_bytes``; a flush that cannot write its parts keeps its rows and runs again. Both are
tried every ``WRITE_RETRY_SECONDS``, and no flush starts while frames wait, so a commit never
covers a row the WAL could not bring back. Beyond the bound, blocks are dropped and counted.
A start whose new WAL file the disk refuses runs without one until a retry can make it.

Durability: each block's frames are appended to the WAL as they arrive, and the WAL is fsynced
every ``wal_fsync_seconds``; a frame is *acknowledged* once fsynced (``acknowledged_messages``
in ``statistics()``). Every ``flush_seconds`` or ``row_group_rows`` rows a flush writes the
buffered rows as parts and commits the WAL (nanosecond details in ``_parquet/_wal.py``). After
a crash (kill -9 included) the next start deletes temporary files and the parts of a flush that
did not commit, replays the WAL, and writes those rows again: nothing acknowledged is lost and
nothing is written twice.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType
from alphapulse.runtime import StalledWrites
from nodes._parquet import TABLE_NAMES, TABLES, FlushJob, ParquetWriter
from nodes._parquet._resume import stored_positions

COMPACTION_CHECK_SECONDS = 10.0
RETENTION_CHECK_SECONDS = 3600.0
WRITE_RETRY_SECONDS = 1.0
"""How soon a writer whose WAL append or flush failed (a full disk) tries again."""


@dataclasses.dataclass(frozen=True)
class ParquetParams:
    path: str = param(
        "data/parquet", doc="Base directory; files go to <path>/<table>/<YYYY-MM-DD>/"
        "<table>_<HH>.parquet. Relative to the topology file. One writer per directory.", minLength=1,
    )
    rotate_seconds: int = param(
        3600, doc="Seconds per file (bucket of header time): 3600 gives <table>_<HH>.parquet, "
        "whole minutes <table>_<HHMM>.parquet.", minimum=60, maximum=86400,
    )
    compression: Literal["zstd", "snappy"] = param("zstd", doc="Parquet compression codec.", live=True)
    row_group_rows: int = param(
        50000, doc="Flush once this many rows are buffered; also the row group size of compacted files.",
        live=True, minimum=1,
    )
    flush_seconds: float = param(
        5.0, doc="Flush buffered rows at least this often, so data is queryable within seconds.",
        live=True, exclusiveMinimum=0,
    )
    wal_fsync_seconds: float = param(
        1.0, doc="fsync the write-ahead log this often (a frame is acknowledged once fsynced); "
        "0 fsyncs after every block.", live=True, minimum=0,
    )
    compact_after_seconds: float = param(
        60.0, doc="Compact an hour's parts into <table>_<HH>.parquet once the hour is over and no "
        "part was added for this long.", live=True, minimum=0,
    )
    retention_days: int = param(
        30, doc="Delete day partitions older than this many days (checked hourly); 0 keeps everything.",
        live=True, minimum=0,
    )
    backlog_bytes: int = param(
        64 * 1024 * 1024, doc="While the write-ahead log refuses appends (a full disk), keep the rows and "
        "hold up to this many bytes of their frames in memory, in order, until it takes them again; beyond "
        "it blocks are dropped and counted (dropped.backlog_full). 0 holds none.", live=True, minimum=0,
    )


@node_kind(
    "sink.parquet",
    emits=(),
    accepts=[*(t.tlv_type for t in TABLES), TLVType.SIGNAL_IDENTITY, TLVType.INSTRUMENT_MAPPING],
    example={"path": "data/parquet", "compression": "zstd", "retention_days": 7},
)
class Parquet(Node):
    """Parquet writer: hourly partitions, parts flushed by size and time, crash-safe.

    A write-ahead log of unflushed rows is replayed after a crash, so nothing acknowledged
    is lost and no reader sees a corrupt file.
    """

    Params = ParquetParams

    def __init__(self, params: ParquetParams) -> None:
        super().__init__(params)
        self.writer: ParquetWriter | None = None
        self._early: list = []
        self._wake = trio.Event()
        self._first_row_at: float | None = None
        self._broken = False
        self._job: FlushJob | None = None
        self._last_flush_unix = 0.0
        self._error_blocks = 0
        self._stalled = StalledWrites()
        """failing WAL appends or flushes (a full disk)"""

    def resume_positions(self) -> dict[int, int]:
        """Where the stored data leaves off per source (``_parquet/_resume.py``): the host starts
        the inputs there, so a restart's stretch is resent into the tables, not skipped."""
        return stored_positions(Path(self.params.path), TABLE_NAMES)

    # -- the push path ------------------------------------------------------------------------------
    def handle_block(self, block, ctx) -> None:
        if self.writer is None:  # inputs can deliver before run() has recovered the directory
            self._early.append(block)
            return
        writer = self.writer
        if writer.unlogged and writer.unlogged_bytes + len(block.data) > self.params.backlog_bytes:
            if not ctx.counters["dropped.backlog_full"]:
                ctx.log.error("write-ahead backlog is full (%.1f MiB): dropping blocks until the disk takes "
                              "writes again; the tables will miss them", self.params.backlog_bytes / 2**20)
            ctx.counters["dropped.backlog_full"] += len(block)
            return
        wal, held = writer.wal, bool(writer.unlogged)
        logged, unsynced = wal.bytes_written, wal.unsynced
        report = writer.add(block)
        ctx.counters["wal.bytes"] += wal.bytes_written - logged
        self._count(report, ctx)
        if writer.unlogged and not held:
            self._write_failed(f"the write-ahead log refused an append ({writer.log_error})", ctx)
        if self.params.wal_fsync_seconds == 0 and not writer.unlogged:
            wal.sync()
            ctx.counters["wal.fsyncs"] += 1
        elif wal.unsynced and not unsynced:
            self._wake.set()  # the loop may be asleep with no fsync due: it must set one now
        rows = self.writer.batch.rows
        if rows and self._first_row_at is None:
            self._first_row_at = trio.current_time()
            self._wake.set()  # likewise the flush deadline, flush_seconds from this first row
        if rows >= self.params.row_group_rows:
            self._wake.set()

    def _write_failed(self, what: str, ctx) -> None:
        """Count a failed write, say so once per spell, and have the loop try again soon."""
        self._stalled.failed(what, ctx, retry_seconds=WRITE_RETRY_SECONDS,
                             holding=f"keeping the rows and holding their frames, in order, up to "
                             f"{self.params.backlog_bytes / 2**20:.1f} MiB")
        self._wake.set()

    def _writes_again(self, ctx) -> None:
        self._stalled.resumed(ctx, "nothing held was lost")

    def _count(self, report, ctx) -> None:
        for table, n in report.rows.items():
            ctx.counters[f"rows.{table}"] += n
        for name, n in report.skipped.items():
            ctx.counters[f"skipped.{name}"] += n
        if report.malformed:
            ctx.counters["errors.malformed"] += report.malformed
        if report.bad_instruments:
            ctx.counters["errors.bad_instrument"] += report.bad_instruments
        if report.mismatched_ids:
            ctx.counters["errors.instrument_id_mismatch"] += report.mismatched_ids
        if report.malformed or report.bad_instruments or report.mismatched_ids:
            self._error_blocks += 1
            if self._error_blocks % 100 == 1:  # the first, then every 100th: counters have the totals
                ctx.log.warning("bad input in a block: %d malformed messages, %d bad instrument names, "
                                "%d mappings whose id does not match the name",
                                report.malformed, report.bad_instruments, report.mismatched_ids)

    # -- the loop: fsync, flush, compaction, retention ----------------------------------------------
    def open(self, ctx) -> None:
        """Recover the directory and replay the WAL (synchronous: nothing to write before it)."""
        self.writer = ParquetWriter(Path(self.params.path), self.params.rotate_seconds)
        report = self.writer.open()
        recovery = report.recovery
        for name, n in (("temporary_removed", recovery.temporary), ("uncommitted_removed", recovery.uncommitted),
                        ("duplicates_removed", recovery.duplicates)):
            if n:
                ctx.counters[f"recovery.{name}"] += n
        ctx.counters["replayed.messages"] += report.replayed_messages
        ctx.counters["replayed.files"] += report.replayed_files
        for kind, n in report.replay_errors.items():
            ctx.counters[f"replayed.{kind}"] += n  # a torn tail is expected after a crash: not an error
        for ingest in report.ingest:
            self._count(ingest, ctx)
        if report.replayed_messages or recovery.uncommitted or recovery.temporary:
            ctx.log.info("recovered %s: replayed %d messages from %d WAL files; removed %d uncommitted parts, "
                         "%d temporary files, %d absorbed parts", self.params.path, report.replayed_messages,
                         report.replayed_files, recovery.uncommitted, recovery.temporary, recovery.duplicates)
        if self.writer.batch.rows:
            self._first_row_at = trio.current_time()
        if not self.writer.wal.started:  # a full disk: replayed rows stay in the batch and their WAL files
            self._write_failed(f"cannot start a write-ahead log file ({self.writer.log_error})", ctx)
        early, self._early = self._early, []
        for block in early:
            self.handle_block(block, ctx)

    async def run(self, ctx):
        self.open(ctx)
        now = trio.current_time()
        next_sync = now + self.params.wal_fsync_seconds
        next_compaction = now
        next_retention = now
        while True:
            # while writes fail (a full disk), a flush waits for the retry: its deadline has passed
            # and the rows keep coming, so either would have the loop try it again at once
            failing = self._stalled.failing
            flush_at = (math.inf if self._first_row_at is None or failing
                        else self._first_row_at + self.params.flush_seconds)
            sync_at = next_sync if self.params.wal_fsync_seconds and self.writer.wal.unsynced else math.inf
            with trio.move_on_at(min(flush_at, sync_at, next_compaction, next_retention, self._stalled.retry_at)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            retry = now >= self._stalled.retry_at
            if retry and self.writer.log_waits:
                self._log_unlogged(ctx)
            if now >= sync_at:
                await self.sync(ctx)
                next_sync = now + self.params.wal_fsync_seconds
            if retry or (not failing and (self.writer.batch.rows >= self.params.row_group_rows or now >= flush_at)):
                await self.flush(ctx)
            if now >= next_compaction:
                retention = now >= next_retention
                await self.maintain(ctx, retention=retention)
                next_compaction = now + COMPACTION_CHECK_SECONDS
                if retention:
                    next_retention = now + RETENTION_CHECK_SECONDS

    def _log_unlogged(self, ctx) -> None:
        if not self.writer.log_unlogged():
            self._write_failed(f"the write-ahead log refused an append ({self.writer.log_error})", ctx)
        elif self._job is None:
            self._writes_again(ctx)  # else the held flush's retry says so
            if self.params.wal_fsync_seconds == 0:
                self.writer.wal.sync()
                ctx.counters["wal.fsyncs"] += 1

    async def sync(self, ctx) -> None:
        await trio.to_thread.run_sync(self.writer.wal.sync)
        ctx.counters["wal.fsyncs"] += 1

    async def flush(self, ctx) -> None:
        """Write the buffered rows as parts and commit the WAL (in a worker thread)."""
        if self._job is None:
            try:
                self._job = self.writer.begin_flush(self.params.compression)
            except OSError as exc:  # no new WAL file (a full disk): the batch stays; try again
                self._write_failed(f"cannot start a write-ahead log file for a flush ({exc})", ctx)
                return
            if self._job is not None:
                self._first_row_at = None
        job = self._job
        if job is None:
            if not self.writer.log_waits:
                self._writes_again(ctx)  # a retry that found nothing to write: nothing is failing
            return
        try:
            result = await trio.to_thread.run_sync(job.run)
        except OSError as exc:  # a full disk: the rows stay in the job and the WAL; the same job runs again
            self._write_failed(f"cannot write a flush's parts ({exc})", ctx)
            ctx.counters["errors.flush"] += 1
            return
        except BaseException:
            if job.started:  # failed part-way: the rows are safe in the WAL; the restarted node replays them
                self._broken = True
            raise  # not started (a cancel landed first): aclose runs it
        self._job = None
        if not self.writer.unlogged:
            self._writes_again(ctx)
        self.writer.finish_flush(result)
        self._last_flush_unix = time.time()
        ctx.counters["flushes"] += 1
        ctx.counters["files.parts"] += len(result.parts)
        for table, n in result.rows.items():
            ctx.counters[f"written.{table}"] += n

    async def maintain(self, ctx, *, retention: bool = True, now: float | None = None) -> None:
        """Compact finished buckets and, with ``retention``, delete expired days."""
        keep = self.params.retention_days if retention else None
        result = await trio.to_thread.run_sync(
            self.writer.maintain, time.time() if now is None else now, self.params.compact_after_seconds,
            self.params.compression, self.params.row_group_rows, keep,
        )
        for compaction in result.compactions:
            if compaction.error:
                ctx.counters["errors.compaction"] += 1
                ctx.log.error("cannot compact %s/%s (its parts stay as they are): %s",
                              compaction.bucket.directory, compaction.bucket.stem, compaction.error)
            else:
                ctx.counters["files.compacted"] += 1
                ctx.counters["files.parts_absorbed"] += compaction.parts
        if result.expired:
            ctx.counters["retention.deleted_days"] += len(result.expired)
            ctx.log.info("retention: deleted %s", ", ".join(str(p) for p in result.expired))

    def reconfigure(self, params: ParquetParams) -> None:
        super().reconfigure(params)
        self._wake.set()

    async def aclose(self, ctx) -> None:
        """Flush what is buffered and close; a crash instead leaves it to the WAL replay."""
        if self.writer is None:
            return
        try:
            if not self._broken:
                if self.writer.log_waits:
                    self._log_unlogged(ctx)
                if self._job is not None:
                    await self.flush(ctx)  # the one a cancel interrupted before it started, or a failed one
                if self._job is None:
                    await self.flush(ctx)
                if self.writer.unlogged:  # a restart asks upstream for them: resume starts from what is stored
                    ctx.counters["dropped.backlog_at_stop"] += self.writer.unlogged_messages
                    ctx.log.error("stopping with %d messages the write-ahead log did not take; the next start "
                                  "asks upstream for them", self.writer.unlogged_messages)
        finally:
            self.writer.close()

    def trouble(self) -> str:
        if self.writer is None:
            return ""
        return self._stalled.trouble(self.params.path, f"holding {self.writer.unlogged_messages:,} messages' frames "
                                     f"({self.writer.unlogged_bytes / 2**20:.1f} of "
                                     f"{self.params.backlog_bytes / 2**20:.0f} MiB)"
                                     + (" and a flush" if self._job is not None else ""))

    def statistics(self) -> dict:
        writer = self.writer
        if writer is None:
            return {"open": False, "early_blocks": len(self._early)}
        return {
            "open": True,
            "buffered_rows": writer.batch.rows,
            "acknowledged_messages": writer.wal.acknowledged,
            "wal_generation": writer.wal.generation,
            "wal_checkpoint": writer.wal.checkpoint,
            "wal_bytes": writer.wal.current_bytes,
            "wal_unsynced_messages": writer.wal.unsynced,
            "instruments_known": len(writer.ingestor.names),
            "buckets_to_compact": len(writer.pending),
            "last_flush_unix": self._last_flush_unix,
            "backlog_bytes": writer.unlogged_bytes,
            "backlog_messages": writer.unlogged_messages,
            "flush_waiting": self._job is not None,
            "write_failing_seconds": self._stalled.seconds,
        }

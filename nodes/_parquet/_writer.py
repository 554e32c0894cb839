"""The writer engine behind ``sink.parquet``: ingest, WAL, flush, compaction, retention, recovery.

Plain synchronous code with no trio in it: the node calls ``add`` from its block handler and
runs the slow steps (``FlushJob.run``, ``maintain``, ``wal.sync``) in a worker thread, one at a
time, so a flush never stalls the event loop. What a worker thread touches is handed to it:
``begin_flush`` swaps the row batch out and rotates the WAL on the node's thread, and the job
owns that batch from then on while new blocks go to a fresh batch and the new WAL file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

from alphapulse import protocol
from alphapulse.runtime import fsync_directory, merge_positions, positions_of, read_positions, write_positions
from nodes._parquet._ingest import Ingestor, IngestReport, RowBatch
from nodes._parquet._store import Bucket, Compaction, PartitionStore, RecoveryReport
from nodes._parquet._tables import TABLE_NAMES, build_table
from nodes._parquet._wal import WriteAheadLog

READ_CHUNK = 1 << 20


@dataclasses.dataclass
class OpenReport:
    recovery: RecoveryReport
    replayed_files: int = 0
    replayed_messages: int = 0
    replay_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    ingest: list[IngestReport] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FlushResult:
    generation: int
    rows: Counter[str]
    parts: list[Path]
    buckets: set[Bucket]


@dataclasses.dataclass
class MaintenanceResult:
    compactions: list[Compaction] = dataclasses.field(default_factory=list)
    expired: list[Path] = dataclasses.field(default_factory=list)


class FlushJob:
    """One flush: the swapped-out rows, the names known then, and the WAL generation to commit."""

    def __init__(self, writer: ParquetWriter, batch: RowBatch, names: dict, generation: int, compression: str) -> None:
        self.writer = writer
        self.batch = batch
        self.names = names
        self.generation = generation
        self.compression = compression
        self.started = False

    def run(self) -> FlushResult:
        """Write one part per (table, bucket), make them durable, checkpoint where each source
        now leaves off (``.positions.json``, see ``alphapulse.runtime._resume``), then commit the WAL."""
        self.started = True
        store = self.writer.store
        result = FlushResult(self.generation, Counter(), [], set())
        positions = self.writer.positions
        for spec, rows, header in self.batch.tables():
            merge_positions(positions, positions_of(header["source"], header["sequence"]))
            table = build_table(spec, rows, header, self.names)
            index = store.bucket_index(header["ts"])
            if (index[1:] < index[:-1]).any():
                order = np.argsort(index, kind="stable")
                table = table.take(order)
                index = index[order]
            cuts = np.flatnonzero(np.diff(index)) + 1
            for start, stop in zip([0, *cuts.tolist()], [*cuts.tolist(), len(index)], strict=True):
                bucket = store.bucket(spec.name, int(index[start]))
                result.parts.append(store.write_part(bucket, table.slice(start, stop - start),
                                                     self.generation, self.compression))
                result.buckets.add(bucket)
            result.rows[spec.name] += len(rows)
        directories = {p.parent for p in result.parts}
        for directory in sorted(directories | {d.parent for d in directories} | {store.base}):
            fsync_directory(directory)
        write_positions(store.base, positions)  # before the commit: until then the WAL holds these rows
        self.writer.wal.commit(self.generation)
        return result


class ParquetWriter:
    def __init__(self, base: Path, period: int) -> None:
        self.base = base
        self.store = PartitionStore(base, TABLE_NAMES, period)
        self.wal = WriteAheadLog(base / "_wal")
        self.ingestor = Ingestor()
        self.batch = RowBatch()
        self.pending: set[Bucket] = set()
        """buckets that have parts, to compact once they are over"""
        self.positions: dict[int, int] = read_positions(base)
        """where the committed rows leave off per source, every source ever stored (flush threads only)"""
        self.unlogged: deque[tuple[bytes, int]] = deque()
        """frames of rows in the batch that the WAL has not taken yet (a full disk), in order"""
        self.unlogged_bytes = self.unlogged_messages = 0
        self.log_error: OSError | None = None
        """why the WAL last refused an append (None while it takes them)"""

    def open(self) -> OpenReport:
        """Recover from whatever a crash left, replay the pending WAL files, start a new one.
        A new file the disk refuses (full) is not fatal: ``log_error`` says why, the next append
        or ``log_unlogged`` starts it, and until then frames wait in ``unlogged`` and no flush
        starts (``log_waits``)."""
        self.base.mkdir(parents=True, exist_ok=True)
        pending = self.wal.open()
        recovery = self.store.recover(pending[0][0] if pending else None)
        report = OpenReport(recovery)
        self.pending |= recovery.buckets
        for generation, path in pending:
            messages = self._replay(path, report)
            self.wal.adopt(generation, messages)
            report.replayed_files += 1
            report.replayed_messages += messages
        try:
            self._start_wal()
        except OSError as exc:
            self.log_error = exc
        return report

    def _start_wal(self) -> None:
        """Start the WAL's current file if it has none (the start at open was refused)."""
        if not self.wal.started:
            preamble, count = self.ingestor.mapping_preamble()
            self.wal.start(preamble, count)

    def _replay(self, path: Path, report: OpenReport) -> int:
        decoder = protocol.FrameDecoder()
        messages = 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(READ_CHUNK)
                decoder.receive_data(chunk)  # b"" at the end: EOF, so a torn tail is counted
                while (block := decoder.next_block()) is not protocol.NEED_DATA:
                    report.ingest.append(self.ingestor.ingest(block, self.batch))
                    messages += len(block)
                if not chunk:
                    break
        for kind, count in decoder.statistics().errors.items():
            if count:
                report.replay_errors[kind] = report.replay_errors.get(kind, 0) + count
        return messages

    def add(self, block: Any) -> IngestReport:
        """Rows of one block into the batch, its useful frames into the WAL (not yet fsynced).
        Frames the WAL did not take (a full disk; ``log_error`` says why) wait in ``unlogged``,
        in order, with every later block's, until ``log_unlogged`` appends them: the rows are in
        the batch already, and no flush starts while their frames are not in the WAL, so a
        commit never covers a row a replay could not bring back."""
        report = self.ingestor.ingest(block, self.batch)
        keep = report.keep
        if keep.all():
            self._log(block.data, len(block))
        elif keep.any():
            kept = block.select(keep)
            self._log(kept.data, len(kept))
        return report

    def _log(self, data: Any, messages: int) -> None:
        if not self.unlogged:
            try:
                self._start_wal()
                self.wal.append(data, messages)
                return
            except OSError as exc:
                self.log_error = exc
        self.unlogged.append((bytes(data), messages))  # the link reuses the block's buffer
        self.unlogged_bytes += len(data)
        self.unlogged_messages += messages

    @property
    def log_waits(self) -> bool:
        """Whether the WAL is behind: frames wait in ``unlogged``, or it has no current file."""
        return bool(self.unlogged) or not self.wal.started

    def log_unlogged(self) -> bool:
        """Start the WAL's current file if it has none, then append what waits, oldest first;
        True once none is left (``log_error`` when not)."""
        try:
            self._start_wal()
        except OSError as exc:
            self.log_error = exc
            return False
        while self.unlogged:
            data, messages = self.unlogged[0]
            try:
                self.wal.append(data, messages)
            except OSError as exc:
                self.log_error = exc
                return False
            self.unlogged.popleft()
            self.unlogged_bytes -= len(data)
            self.unlogged_messages -= messages
        self.log_error = None
        return True

    def begin_flush(self, compression: str) -> FlushJob | None:
        """Swap the batch out for a flush and start a new WAL file; None when there is nothing to
        flush, or the batch's frames are not all in the WAL yet, or there is no current WAL file
        (``log_unlogged`` starts it). The new file comes first: when it cannot be made (a full
        disk), the batch stays where it was."""
        if not self.batch.rows or self.unlogged or not self.wal.started:
            return None
        preamble, count = self.ingestor.mapping_preamble()
        generation = self.wal.rotate(preamble, count)
        batch, self.batch = self.batch, RowBatch()
        return FlushJob(self, batch, dict(self.ingestor.names), generation, compression)

    def finish_flush(self, result: FlushResult) -> None:
        self.pending |= result.buckets

    def maintain(self, now: float, quiet: float, compression: str, row_group_rows: int,
                 keep_days: int | None) -> MaintenanceResult:
        """Compact the buckets that are over; with ``keep_days``, apply retention too."""
        result = MaintenanceResult()
        for bucket in self.store.due(self.pending, now, quiet):
            compaction = self.store.compact(bucket, compression, row_group_rows)
            if compaction.parts:
                result.compactions.append(compaction)
            self.pending.discard(bucket)  # after an error its parts stay readable; retried at the next start
        if keep_days:
            today = dt.datetime.fromtimestamp(now, dt.UTC).date()
            result.expired = self.store.expire(today, keep_days)
            self.pending = {b for b in self.pending if b.directory.exists()}
        return result

    def close(self) -> None:
        self.wal.close()

"""The Parquet files: partitions, parts, compaction into the hour's file, retention, recovery.

Layout under the base directory::

    <table>/<YYYY-MM-DD>/<table>_<HH>.parquet           the bucket's compacted file
    <table>/<YYYY-MM-DD>/<table>_<HH>.g<G>.parquet      a part: one flush's rows of that bucket
    <table>/<YYYY-MM-DD>/.<name>.tmp                    being written; never matches *.parquet

A Parquet file is unreadable until its footer is written, so nothing is ever written in place:
each flush writes one small complete part per (table, bucket) to a temporary name, fsyncs it and
renames it, so ``read_parquet('<base>/trades/*/*.parquet')`` sees new rows within a flush
interval and never a half-written file. Once a bucket is over and has had no new part for
``quiet`` seconds, its parts (and the existing compacted file, for late rows) are compacted
into ``<table>_<HH>.parquet`` the same way, and the parts are deleted. The compacted file's
metadata names the parts it absorbed, so a crash between its rename and their deletion is
repaired at the next start (until then a reader may count those rows twice; that window is
the unlinks after one rename).

The bucket is the header time floored to ``period`` seconds: ``_HH`` for whole hours,
``_HHMM`` for whole minutes, ``_HHMMSS`` otherwise. Retention deletes whole ``<YYYY-MM-DD>``
directories older than N days.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alphapulse.runtime import fsync_directory

PART = re.compile(r"^(?P<stem>[a-z_]+_\d{2,6})\.g(?P<generation>\d+)\.parquet$")
FINAL = re.compile(r"^(?P<stem>[a-z_]+_\d{2,6})\.parquet$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ABSORBED = b"alphapulse.absorbed"
NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Bucket:
    directory: Path
    stem: str

    @property
    def final(self) -> Path:
        return self.directory / f"{self.stem}.parquet"

    def parts(self) -> list[Path]:
        """This bucket's parts, oldest generation first."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                match = PART.match(path.name)
                if match and match.group("stem") == self.stem:
                    found.append((int(match.group("generation")), path))
        return [p for _, p in sorted(found)]


@dataclasses.dataclass
class RecoveryReport:
    temporary: int = 0
    uncommitted: int = 0
    duplicates: int = 0
    buckets: set[Bucket] = dataclasses.field(default_factory=set)


@dataclasses.dataclass(frozen=True)
class Compaction:
    bucket: Bucket
    parts: int
    rows: int
    error: str = ""


class PartitionStore:
    def __init__(self, base: Path, tables: tuple[str, ...], period: int) -> None:
        self.base = base
        self.tables = tables
        self.period = period

    # -- naming --------------------------------------------------------------------------------
    def bucket_index(self, ts_ns: np.ndarray) -> np.ndarray:
        return ts_ns // np.uint64(self.period * NS)

    def bucket(self, table: str, index: int) -> Bucket:
        start = dt.datetime.fromtimestamp(index * self.period, dt.UTC)
        if self.period % 3600 == 0:
            clock = f"{start:%H}"
        elif self.period % 60 == 0:
            clock = f"{start:%H%M}"
        else:
            clock = f"{start:%H%M%S}"
        return Bucket(self.base / table / f"{start:%Y-%m-%d}", f"{table}_{clock}")

    def bucket_end(self, bucket: Bucket) -> float:
        """Unix time at which the bucket's period is over."""
        clock = bucket.stem.rsplit("_", 1)[1].ljust(6, "0")
        day = dt.datetime.strptime(bucket.directory.name, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        start = day + dt.timedelta(hours=int(clock[:2]), minutes=int(clock[2:4]), seconds=int(clock[4:]))
        return start.timestamp() + self.period

    # -- writing ---------------------------------------------------------------------------------
    def write_part(self, bucket: Bucket, table: pa.Table, generation: int, compression: str) -> Path:
        bucket.directory.mkdir(parents=True, exist_ok=True)
        path = bucket.directory / f"{bucket.stem}.g{generation}.parquet"
        _write_atomically(path, table, compression, row_group_size=max(1, table.num_rows))
        return path

    def compact(self, bucket: Bucket, compression: str, row_group_rows: int) -> Compaction:
        """Merge the bucket's parts (after its compacted file, if any) into its compacted file."""
        parts = bucket.parts()
        if not parts:
            return Compaction(bucket, 0, 0)
        sources = ([bucket.final] if bucket.final.exists() else []) + parts
        absorbed = {ABSORBED: json.dumps([p.name for p in parts]).encode()}
        try:
            rows = _merge_atomically(bucket.final, sources, absorbed, compression, row_group_rows)
        except (pa.ArrowInvalid, OSError) as exc:  # a part we cannot merge stays readable as it is
            return Compaction(bucket, len(parts), 0, f"{type(exc).__name__}: {exc}")
        fsync_directory(bucket.directory)
        for part in parts:
            part.unlink()
        fsync_directory(bucket.directory)
        return Compaction(bucket, len(parts), rows)

    def due(self, buckets: set[Bucket], now: float, quiet: float) -> list[Bucket]:
        """Buckets whose period is over and whose newest part is ``quiet`` seconds old."""
        out = []
        for bucket in sorted(buckets, key=lambda b: (b.directory, b.stem)):
            parts = bucket.parts()
            if not parts:
                out.append(bucket)  # nothing to do; compact() forgets it
                continue
            newest = max(p.stat().st_mtime for p in parts)
            if self.bucket_end(bucket) <= now and newest + quiet <= now:
                out.append(bucket)
        return out

    # -- retention -------------------------------------------------------------------------------
    def expire(self, today: dt.date, keep_days: int) -> list[Path]:
        """Delete day directories older than ``keep_days`` days before ``today``."""
        oldest_kept = today - dt.timedelta(days=keep_days)
        deleted = []
        for table in self.tables:
            root = self.base / table
            if not root.is_dir():
                continue
            for day in sorted(root.iterdir()):
                if DAY.match(day.name) and dt.date.fromisoformat(day.name) < oldest_kept:
                    shutil.rmtree(day)
                    deleted.append(day)
            if deleted:
                fsync_directory(root)
        return deleted

    # -- recovery --------------------------------------------------------------------------------
    def recover(self, uncommitted_from: int | None) -> RecoveryReport:
        """Remove what a crash left: temporary files, parts of a flush that never committed
        (generation >= ``uncommitted_from``), parts a compacted file already absorbed."""
        report = RecoveryReport()
        for table in self.tables:
            root = self.base / table
            if not root.is_dir():
                continue
            for day in root.iterdir():
                if not day.is_dir():
                    continue
                touched = False
                for path in list(day.iterdir()):
                    part = PART.match(path.name)
                    if path.name.startswith(".") and path.name.endswith(".tmp"):
                        path.unlink()
                        report.temporary += 1
                        touched = True
                    elif part and uncommitted_from is not None and int(part.group("generation")) >= uncommitted_from:
                        path.unlink()
                        report.uncommitted += 1
                        touched = True
                    elif part:
                        report.buckets.add(Bucket(day, part.group("stem")))
                for bucket in [b for b in report.buckets if b.directory == day and b.final.exists()]:
                    absorbed = _absorbed(bucket.final)
                    for part in bucket.parts():
                        if part.name in absorbed:
                            part.unlink()
                            report.duplicates += 1
                            touched = True
                if touched:
                    fsync_directory(day)
        return report


def _absorbed(path: Path) -> set[str]:
    metadata = pq.read_schema(path).metadata or {}
    return set(json.loads(metadata.get(ABSORBED, b"[]")))


def _merge_atomically(path: Path, sources: list[Path], metadata: dict[bytes, bytes], compression: str,
                      row_group_size: int) -> int:
    """Write the rows of ``sources``, in order, as ``path`` (atomically: ``_atomic_file``) in row
    groups of ``row_group_size`` rows; returns the row count. Streamed a batch at a time: it
    holds about two row groups, never the bucket (an hour of book deltas is millions of rows: read
    at once, they made every hourly compaction allocate hundreds of MB, much of it kept by the allocator)."""
    rows = 0
    try:
        schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in sources], promote_options="default")
        with _atomic_file(path) as f, \
                pq.ParquetWriter(f, schema.with_metadata(metadata), compression=compression) as writer:
            held: list[pa.RecordBatch] = []
            for source in sources:  # one open at a time: an open reader keeps the pages it last read
                with pq.ParquetFile(source) as reader:
                    for batch in reader.iter_batches(batch_size=row_group_size, use_threads=False):
                        held.append(_conform(batch, schema))
                        rows += batch.num_rows
                        if sum(b.num_rows for b in held) >= row_group_size:
                            held = _write_row_groups(writer, held, schema, row_group_size)
            if held or not rows:  # an empty bucket still gets its (empty) row group, as before
                writer.write_table(pa.Table.from_batches(held, schema), row_group_size=row_group_size)
    except BaseException:
        _temporary(path).unlink(missing_ok=True)  # a compaction that failed leaves the parts as they were
        raise
    return rows


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns (promoted types; null where it has no such column), as
    ``pa.concat_tables(promote_options="default")`` would merge it."""
    if batch.schema.equals(schema):
        return batch
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        columns.append(pa.nulls(batch.num_rows, field.type) if index < 0 else batch.column(index).cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _write_row_groups(writer: pq.ParquetWriter, held: list[pa.RecordBatch], schema: pa.Schema,
                      row_group_size: int) -> list[pa.RecordBatch]:
    """Write the whole row groups in ``held``; return the rest (fewer than ``row_group_size`` rows)."""
    table = pa.Table.from_batches(held, schema)
    whole = table.num_rows - table.num_rows % row_group_size
    writer.write_table(table.slice(0, whole), row_group_size=row_group_size)
    return table.slice(whole).combine_chunks().to_batches()


def _write_atomically(path: Path, table: pa.Table, compression: str, row_group_size: int) -> None:
    with _atomic_file(path) as f:
        pq.write_table(table, f, compression=compression, row_group_size=row_group_size)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """``path`` written whole or not at all: into a hidden temporary file, fsynced when the block
    ends, then renamed over ``path``. A failure removes the temporary file (on a full disk it
    holds the space a retry needs); one a crash leaves, recovery removes."""
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise

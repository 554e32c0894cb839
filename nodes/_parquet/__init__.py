"""The parts of ``sink.parquet``: tables (``_tables``), ingest, WAL, partition store, writer engine."""

from nodes._parquet._store import Bucket, PartitionStore
from nodes._parquet._tables import TABLE_NAMES, TABLES
from nodes._parquet._wal import WriteAheadLog, WriterLocked
from nodes._parquet._writer import FlushJob, FlushResult, MaintenanceResult, OpenReport, ParquetWriter

__all__ = [
    "TABLES",
    "TABLE_NAMES",
    "Bucket",
    "FlushJob",
    "FlushResult",
    "MaintenanceResult",
    "OpenReport",
    "ParquetWriter",
    "PartitionStore",
    "WriteAheadLog",
    "WriterLocked",
]

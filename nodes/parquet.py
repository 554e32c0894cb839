"""``sink.parquet``: durable, partitioned Parquet files."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class ParquetParams:
    path: str = param(
        "data/parquet", doc="Base directory; files go to <path>/<kind>/<YYYY-MM-DD>/"
        "<kind>_<HH>.parquet. Relative to the topology file.", minLength=1,
    )
    rotate_seconds: int = param(3600, doc="Seconds per file before rotating.", minimum=60)
    compression: Literal["zstd", "snappy"] = param("zstd", doc="Parquet compression codec.")
    row_group_rows: int = param(
        50000, doc="Rows buffered before a row group is flushed.", live=True, minimum=1,
    )
    flush_seconds: float = param(
        5.0, doc="Flush a row group at least this often, so data is queryable within seconds.",
        live=True, exclusiveMinimum=0,
    )
    retention_days: int = param(
        30, doc="Delete partitions older than this many days; 0 keeps everything.", live=True,
        minimum=0,
    )


@node_kind(
    "sink.parquet",
    emits=(),
    accepts=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
             TLVType.BAR, TLVType.POOL_SWAP, TLVType.POOL_MINT, TLVType.POOL_BURN,
             TLVType.POOL_SYNC, TLVType.POOL_EVENT_RETRACTION, TLVType.ARBITRAGE_SIGNAL,
             TLVType.INSTRUMENT_MAPPING],
    example={"path": "data/parquet", "compression": "zstd", "retention_days": 7},
)
class Parquet(Node):
    """Parquet writer: hourly partitions, row groups flushed by size and time, crash-safe.

    A write-ahead log of unflushed batches is replayed after a crash, so nothing acknowledged
    is lost and no reader sees a corrupt file.
    """

    Params = ParquetParams

    async def run(self, ctx):
        raise NotImplementedError("sink.parquet is implemented by issue #7")

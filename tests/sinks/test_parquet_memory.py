"""sink.parquet's memory: compacting a bucket streams it, a row group at a time.

An hour of book deltas is millions of rows. Reading all of a bucket's parts before writing the
compacted file made each hourly compaction allocate the whole hour at once (~300 MB of Arrow
memory at the demo's rate), and the allocator keeps part of such a peak long after. The
compaction's Arrow peak must stay a small fraction of the bucket, whatever its size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from alphapulse import protocol
from alphapulse.kinds import build_params
from nodes.parquet import Parquet, ParquetParams
from tests.sinks import BTC, HOUR_NS, block_of, build, make_ctx

ROOT = Path(__file__).resolve().parents[2]
PARTS = 60
ROWS_PER_PART = 2500
ROW_GROUP_ROWS = 1000

# The peak is that of Arrow's default pool in a fresh process: the Parquet readers allocate from
# the C++ default pool directly, so neither a proxy pool nor this process's (monotonic) peak sees it.
COMPACT = """
import json, sys
from pathlib import Path
import pyarrow as pa
from nodes._parquet._store import Bucket, PartitionStore
from nodes._parquet._tables import TABLE_NAMES
base, directory, stem, row_group_rows = sys.argv[1:]
compaction = PartitionStore(Path(base), TABLE_NAMES, 3600).compact(Bucket(Path(directory), stem), "zstd",
                                                                    int(row_group_rows))
print(json.dumps({"parts": compaction.parts, "rows": compaction.rows, "error": compaction.error,
                  "peak": pa.default_memory_pool().max_memory()}))
"""


async def test_compaction_holds_about_a_row_group_not_the_bucket(tmp_path: Path):
    base = tmp_path / "pq"
    node = Parquet(build_params(ParquetParams, {"path": str(base), "retention_days": 0,
                                                "row_group_rows": ROW_GROUP_ROWS}))
    ctx = make_ctx("sink.parquet")
    node.open(ctx)
    hour = time.time_ns() // HOUR_NS * HOUR_NS - 2 * HOUR_NS  # an hour that is over
    sequence = 1
    for _ in range(PARTS):
        stamps = [hour + (sequence + k) * 10**6 for k in range(ROWS_PER_PART)]
        trades = [protocol.Trade(BTC.id, 10**8 * (sequence + k), 1 + k, t) for k, t in enumerate(stamps)]
        node.handle_block(block_of(build(trades, ts=stamps, first_sequence=sequence)), ctx)
        await node.flush(ctx)
        sequence += ROWS_PER_PART
    await node.aclose(ctx)
    (bucket,) = node.writer.pending
    assert len(bucket.parts()) == PARTS

    done = subprocess.run([sys.executable, "-c", COMPACT, str(base), str(bucket.directory), bucket.stem,
                           str(ROW_GROUP_ROWS)], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert (result["parts"], result["rows"], result["error"]) == (PARTS, PARTS * ROWS_PER_PART, "")
    assert not bucket.parts()
    compacted = pq.ParquetFile(bucket.final)
    groups = [compacted.metadata.row_group(i).num_rows for i in range(compacted.metadata.num_row_groups)]
    assert groups == [ROW_GROUP_ROWS] * (PARTS * ROWS_PER_PART // ROW_GROUP_ROWS)
    table = compacted.read()
    assert table["sequence"].to_pylist() == list(range(1, PARTS * ROWS_PER_PART + 1))
    # reading the bucket whole needs at least its decoded size; streamed, a few row groups' worth
    assert result["peak"] < table.nbytes / 4, (result["peak"], table.nbytes)

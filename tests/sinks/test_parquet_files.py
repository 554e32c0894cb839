"""sink.parquet's files: partition names, rotation into hour files, compaction of late rows, retention.

The node is driven directly (handle_block, flush, maintain) with a real NodeContext, so each
step happens exactly when the test says; the files are real and read back with DuckDB.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from alphapulse import protocol
from alphapulse.kinds import build_params
from nodes.parquet import Parquet, ParquetParams
from tests.sinks import BTC, HOUR_NS, block_of, build, make_ctx

DAY_NS = 24 * HOUR_NS


def _node(base: Path, **params) -> tuple[Parquet, object]:
    node = Parquet(build_params(ParquetParams, {"path": str(base), "retention_days": 0, **params}))
    ctx = make_ctx("sink.parquet")
    node.open(ctx)
    return node, ctx


class Feed:
    """Trades of one source with consecutive sequences, at the header times asked for."""

    def __init__(self) -> None:
        self.sequence = 1

    def trades(self, stamps: list[int]) -> protocol.FrameBlock:
        frames = build([protocol.Trade(BTC.id, 10**8 * (self.sequence + k), 1, t) for k, t in enumerate(stamps)],
                       ts=stamps, first_sequence=self.sequence)
        self.sequence += len(stamps)
        return block_of(frames)


def _hour(ns: int) -> int:
    return ns - ns % HOUR_NS


def _names(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.parquet"))


def _sequences(glob: str) -> list[int]:
    return [r[0] for r in duckdb.connect().execute(f"SELECT sequence FROM read_parquet('{glob}')").fetchall()]


def _strip_generation(name: str) -> str:
    head, _, rest = name.partition(".g")
    return f"{head}.g*.parquet" if rest else name


async def test_parts_rotate_by_hour_and_compact_when_the_hour_is_over(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _node(base, compact_after_seconds=0)
    feed = Feed()
    past = _hour(time.time_ns()) - 3 * HOUR_NS
    h0 = dt.datetime.fromtimestamp(past / 1e9, dt.UTC)
    h1 = h0 + dt.timedelta(hours=1)
    future = _hour(time.time_ns()) + 2 * HOUR_NS  # a bucket that is certainly not over
    node.handle_block(feed.trades([past + 60 * 10**9 * k for k in range(10)]), ctx)
    await node.flush(ctx)
    node.handle_block(feed.trades([past + HOUR_NS - 10**9, past + HOUR_NS, past + HOUR_NS + 1, future]), ctx)
    await node.flush(ctx)
    d0, d1, df = (f"trades/{h:%Y-%m-%d}" for h in (h0, h1, dt.datetime.fromtimestamp(future / 1e9, dt.UTC)))
    ff = dt.datetime.fromtimestamp(future / 1e9, dt.UTC)
    assert [_strip_generation(n) for n in _names(base)] == sorted([
        f"{d0}/trades_{h0:%H}.g*.parquet", f"{d0}/trades_{h0:%H}.g*.parquet",
        f"{d1}/trades_{h1:%H}.g*.parquet", f"{df}/trades_{ff:%H}.g*.parquet"])
    assert sorted(_sequences(f"{base}/trades/*/*.parquet")) == list(range(1, 15))

    await node.maintain(ctx, retention=False)
    assert _names(base) == sorted([f"{d0}/trades_{h0:%H}.parquet", f"{d1}/trades_{h1:%H}.parquet",
                                   _names(base)[-1]])
    assert ".g" in _names(base)[-1]  # the future hour keeps its part
    assert _sequences(f"{base}/{d0}/trades_{h0:%H}.parquet") == list(range(1, 12))  # in arrival order
    assert ctx.counters["files.compacted"] == 2 and ctx.counters["files.parts_absorbed"] == 3

    # late rows for a compacted hour: a new part beside it, merged into it at the next compaction
    node.handle_block(feed.trades([past + 5, past + 6]), ctx)
    await node.flush(ctx)
    assert sum(1 for n in _names(base) if n.startswith(f"{d0}/trades_{h0:%H}.")) == 2
    await node.maintain(ctx, retention=False)
    assert _sequences(f"{base}/{d0}/trades_{h0:%H}.parquet") == [*range(1, 12), 15, 16]
    assert sorted(_sequences(f"{base}/trades/*/*.parquet")) == list(range(1, 17))
    compacted = pq.ParquetFile(base / d0 / f"trades_{h0:%H}.parquet")
    assert compacted.metadata.num_rows == 13
    await node.aclose(ctx)


async def test_a_quiet_period_delays_compaction(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _node(base, compact_after_seconds=3600)
    past = _hour(time.time_ns()) - 5 * HOUR_NS
    node.handle_block(Feed().trades([past, past + 1]), ctx)
    await node.flush(ctx)
    await node.maintain(ctx, retention=False)
    assert ".g" in _names(base)[0]
    await node.maintain(ctx, retention=False, now=time.time() + 3601)
    assert ".g" not in _names(base)[0]
    await node.aclose(ctx)


async def test_rotation_interval_names_the_files(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _node(base, rotate_seconds=900)
    day = int(dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()) * 10**9
    node.handle_block(Feed().trades([day + 15 * 60 * 10**9 - 1, day + 15 * 60 * 10**9, day + DAY_NS]), ctx)
    await node.flush(ctx)
    assert [_strip_generation(n) for n in _names(base)] == [
        "trades/2024-05-01/trades_0000.g*.parquet", "trades/2024-05-01/trades_0015.g*.parquet",
        "trades/2024-05-02/trades_0000.g*.parquet"]
    await node.aclose(ctx)


async def test_retention_deletes_old_days_only(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _node(base, retention_days=5, compact_after_seconds=0)
    now = time.time_ns()
    node.handle_block(Feed().trades([now - 10 * DAY_NS, now - 3 * DAY_NS, now]), ctx)
    await node.flush(ctx)
    days = lambda: sorted(p.name for p in (base / "trades").iterdir())  # noqa: E731
    assert len(days()) == 3
    await node.maintain(ctx, retention=True)
    kept = [dt.datetime.fromtimestamp(t / 1e9, dt.UTC).strftime("%Y-%m-%d") for t in (now - 3 * DAY_NS, now)]
    assert days() == kept
    assert ctx.counters["retention.deleted_days"] == 1
    assert sorted(_sequences(f"{base}/trades/*/*.parquet")) == [2, 3]
    assert (base / "_wal" / "checkpoint").exists()
    await node.aclose(ctx)


async def test_compression_is_configurable(tmp_path: Path):
    base = tmp_path / "pq"
    for codec in ("zstd", "snappy"):
        node, ctx = _node(base / codec, compression=codec)
        node.handle_block(Feed().trades([time.time_ns()]), ctx)
        await node.aclose(ctx)
        (path,) = (base / codec).rglob("*.parquet")
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == codec.upper()


async def test_a_source_whose_rows_lie_in_older_hours_resumes_from_the_checkpoint(tmp_path: Path):
    """A restart reads only the newest partition of each table; a source quiet since an older hour
    is known from the checkpoint each flush writes (``.positions.json``), so what it sends while the
    writer is down is asked for, not skipped."""
    from alphapulse.runtime import read_positions

    base = tmp_path / "pq"
    node, ctx = _node(base)
    old = _hour(time.time_ns()) - 5 * HOUR_NS
    new = _hour(time.time_ns())
    quiet = build([protocol.Trade(BTC.id, 10**8, 1, old + k) for k in range(4)], ts=[old + k for k in range(4)],
                  source=7, first_sequence=1)
    busy = build([protocol.Trade(BTC.id, 10**8, 1, new + k) for k in range(9)], ts=[new + k for k in range(9)],
                 source=8, first_sequence=100)
    node.handle_block(block_of(quiet), ctx)
    await node.flush(ctx)
    node.handle_block(block_of(busy), ctx)
    await node.flush(ctx)
    await node.aclose(ctx)
    assert read_positions(base) == {7: 4, 8: 108}

    restarted = Parquet(build_params(ParquetParams, {"path": str(base), "retention_days": 0}))
    assert restarted.resume_positions() == {7: 4, 8: 108}
    (base / ".positions.json").unlink()  # as before the checkpoint: the quiet source was not known
    assert restarted.resume_positions() == {8: 108}
    assert sorted(_sequences(f"{base}/*/*/*.parquet")) == [1, 2, 3, 4, *range(100, 109)]

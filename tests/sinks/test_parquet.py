"""sink.parquet end to end: a real stream through the real NodeHost, read back with DuckDB."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import trio

from alphapulse import protocol
from nodes._parquet._ingest import Ingestor, RowBatch
from nodes._parquet._tables import BY_TYPE
from tests.sinks import (
    BTC,
    ETH,
    HOUR_NS,
    POOL,
    UNNAMED,
    block_of,
    build,
    malformed_trade_frame,
    market_records,
    run_sink,
)

START = int(dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC).timestamp()) * 10**9
NAMES = {BTC.id: ("coinbase", "BTC-USD"), ETH.id: ("kraken", "ETH-USD"), POOL.id: ("polygon", POOL.name)}


def _query(sql: str) -> list[tuple]:
    return duckdb.connect().execute(sql).fetchall()


def _sent(records, kind) -> list[tuple[int, object]]:
    """(sequence, record) of every sent record of ``kind`` (sequences start at 1, one per message)."""
    return [(seq, r) for seq, (r, _) in enumerate(records, start=1) if isinstance(r, kind)]


async def test_stream_is_queryable_with_exact_values(tmp_path: Path):
    records = market_records(START)
    frames = build([r for r, _ in records], ts=[t for _, t in records])
    frames.append(malformed_trade_frame(START, len(frames) + 1))
    base = tmp_path / "pq"
    params = {"path": str(base), "retention_days": 0, "row_group_rows": 1000, "flush_seconds": 0.2}
    async with run_sink("sink.parquet", params) as run:
        # past row_group_rows, a flush starts while the stream goes on (it waits for any start-up
        # maintenance in flight, hence the wait here rather than a race against the rest)
        await run.send(frames[:1332], per_block=333)
        counters = run.ctx.counters
        with trio.fail_after(10):
            while not counters["flushes"]:
                await trio.sleep(0.01)
        await run.send(frames[1332:], per_block=333)
        await run.wait_received(len(frames))
    # stopped as SIGTERM stops it: the last rows were flushed by aclose
    glob = f"'{base}/trades/*/*.parquet'"
    trades = _sent(records, protocol.Trade)
    rows = _query(f"SELECT sequence, price, quantity, price_float, epoch_ns(exchange_ts), side, venue, symbol, "
                  f"instrument_id, source, epoch_ns(ts) FROM read_parquet({glob}) ORDER BY sequence")
    assert len(rows) == len(trades)
    stamps = {seq: t for seq, (_, t) in enumerate(records, start=1)}
    for row, (seq, trade) in zip(rows, trades, strict=True):
        venue, symbol = NAMES.get(trade.instrument_id, (None, None))
        assert row == (seq, Decimal(trade.price).scaleb(-8), Decimal(trade.quantity).scaleb(-8),
                       trade.price / 1e8, trade.exchange_ts_ns or None, trade.side, venue, symbol,
                       trade.instrument_id, 3, stamps[seq])
    exact_sum = sum(Decimal(t.price).scaleb(-8) for _, t in trades)
    assert _query(f"SELECT sum(price), typeof(price) FROM read_parquet({glob}) GROUP BY ALL") == [
        (exact_sum, "DECIMAL(19,8)")]
    assert _query(f"SELECT count(*) FROM read_parquet({glob}) WHERE venue IS NULL") == [
        (sum(1 for _, t in trades if t.instrument_id == UNNAMED.id),)]

    quotes = _sent(records, protocol.Quote)
    got = _query(f"SELECT sequence, bid_price, ask_qty, symbol FROM read_parquet('{base}/quotes/*/*.parquet') "
                 "ORDER BY sequence")
    assert got == [(s, Decimal(q.bid_price).scaleb(-8), Decimal(q.ask_qty).scaleb(-8), NAMES[q.instrument_id][1])
                   for s, q in quotes]

    deltas = _sent(records, protocol.OrderBookDelta)
    got = _query(f"SELECT sequence, exchange_sequence, prev_sequence, side, price, qty FROM "
                 f"read_parquet('{base}/book_deltas/*/*.parquet')")
    assert sorted(got) == sorted((s, d.exchange_sequence, d.prev_sequence, side, Decimal(p).scaleb(-8),
                                  Decimal(q).scaleb(-8)) for s, d in deltas for p, q, side in d.changes)

    books = _sent(records, protocol.OrderBook)
    got = _query(f"SELECT sequence, side, level, price, qty FROM read_parquet('{base}/book_snapshots/*/*.parquet')")
    expected = [(s, side, level, Decimal(p).scaleb(-8), Decimal(q).scaleb(-8))
                for s, b in books for side, levels in ((0, b.bids), (1, b.asks)) for level, (p, q) in enumerate(levels)]
    assert sorted(got) == sorted(expected)

    swaps = _sent(records, protocol.PoolSwap)
    got = _query(f"SELECT sequence, amount_in, amount_out, amount_in_float, liquidity, tick, tx_hash, venue, symbol "
                 f"FROM read_parquet('{base}/swaps/*/*.parquet') ORDER BY sequence")
    assert got == [(s, str(w.amount_in), str(w.amount_out), w.amount_in / 10**18, str(w.liquidity), w.tick,
                    "0x" + w.tx_hash.hex(), "polygon", POOL.name) for s, w in swaps]

    assert _query(f"SELECT buy_price, net_profit, n_path, symbol FROM "
                  f"read_parquet('{base}/arbitrage_signals/*/*.parquet')") == [
        (Decimal("65000"), Decimal("97"), 1, "BTC-USD")]

    assert counters["errors.malformed"] == 1
    assert counters["skipped.HEARTBEAT"] == 1
    assert counters["rows.trades"] == len(trades)
    assert counters["flushes"] >= 2
    assert counters["wal.bytes"] > 0
    files = sorted(p.name for p in base.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith(".tmp")]
    wal = sorted(p.name for p in (base / "_wal").iterdir())
    assert wal[:2] == ["checkpoint", "lock"] and len(wal) == 3  # the current file: names only


async def test_bad_input_is_counted_not_fatal(tmp_path: Path):
    """A frame with a broken TLV and an unparsable instrument name: counted, the rest kept."""
    base = tmp_path / "pq"
    good = build([protocol.mapping_for(BTC), protocol.InstrumentMapping(ETH.id, "not a|name"),
                  protocol.Trade(BTC.id, 10**8, 10**8, START), protocol.Trade(ETH.id, 2 * 10**8, 10**8, START)],
                 ts=START)
    async with run_sink("sink.parquet", {"path": str(base), "retention_days": 0}) as run:
        await run.send([*good, malformed_trade_frame(START, 5)], per_block=10)
        await run.publisher.publish(protocol.FrameBlock.from_bytes(build(
            [protocol.Trade(BTC.id, 3 * 10**8, 10**8, START)], ts=START, first_sequence=6)[0]))
        await run.wait_received(6)
        counters = run.ctx.counters
    assert counters["errors.malformed"] == 1
    assert counters["errors.bad_instrument"] == 1
    assert _query(f"SELECT price, symbol FROM read_parquet('{base}/trades/*/*.parquet') ORDER BY price") == [
        (Decimal(1), "BTC-USD"), (Decimal(2), None), (Decimal(3), "BTC-USD")]


async def test_files_are_complete_while_the_node_runs(tmp_path: Path):
    """Rows are queryable after a flush while the node keeps running; every visible file is whole."""
    base = tmp_path / "pq"
    frames = build([protocol.Trade(BTC.id, 10**8 + k, 1, START) for k in range(2000)],
                   ts=[START + k * HOUR_NS // 1000 for k in range(2000)])
    async with run_sink("sink.parquet", {"path": str(base), "retention_days": 0, "row_group_rows": 400,
                                         "flush_seconds": 60}) as run:
        await run.send(frames, per_block=100)
        await run.wait_received(len(frames))
        with trio.fail_after(20):
            while run.ctx.counters["written.trades"] < 1600:  # flushed by size, not by time or stop
                await trio.sleep(0.01)
        visible = sorted(base.glob("trades/*/*.parquet"))
        for path in visible:
            pq.read_metadata(path)  # a complete footer
        count = _query(f"SELECT count(*) FROM read_parquet('{base}/trades/*/*.parquet')")[0][0]
        assert count == run.ctx.counters["written.trades"] >= 1600



async def test_rows_after_a_quiet_spell_are_flushed_and_acknowledged_on_time(tmp_path: Path):
    """Rows that reach an idle writer (nothing buffered, nothing waiting for fsync) start the
    flush_seconds and wal_fsync_seconds clocks at once. The loop used to sleep on until its next
    compaction check (10 s), so such rows waited that long to be queryable and acknowledged."""
    base = tmp_path / "pq"
    frames = build([protocol.Trade(BTC.id, 10**8 + k, 1, START) for k in range(20)], ts=START)
    async with run_sink("sink.parquet", {"path": str(base), "retention_days": 0, "flush_seconds": 0.2,
                                         "wal_fsync_seconds": 0.2}) as run:
        counters = run.ctx.counters
        await trio.sleep(0.5)  # idle: the start-up maintenance is done, the loop waits for its next check
        assert counters["flushes"] == counters["wal.fsyncs"] == 0
        await run.send(frames[:10], per_block=10)
        await run.wait_received(10)
        with trio.fail_after(5):  # flush_seconds and wal_fsync_seconds are 0.2; the bug took ~10 s
            while not counters["flushes"] or not counters["wal.fsyncs"]:
                await trio.sleep(0.02)
        await trio.sleep(0.5)  # idle again, then more rows: the same once more
        flushes = counters["flushes"]
        await run.send(frames[10:], per_block=10)
        await run.wait_received(20)
        with trio.fail_after(5):
            while counters["flushes"] == flushes:
                await trio.sleep(0.02)
        assert counters["written.trades"] == 20


def test_block_path_matches_the_per_message_path():
    """Deltas and books, standard and extended TLVs, read for a whole block at once, give the rows
    the one-message reader gives; a value whose count disagrees with its size is malformed."""
    rng = random.Random(7)
    records = []
    for k in range(300):
        if k % 3:
            changes = tuple((rng.randrange(1, 10**13), rng.randrange(0, 10**10), rng.randrange(2))
                            for _ in range(rng.choice([0, 1, 5, 12, 13, 40])))  # 13+ changes: extended TLV
            records.append(protocol.OrderBookDelta(BTC.id, k, k + 1, k, k % 2, changes))
        else:
            bids, asks = ([(rng.randrange(1, 10**13), rng.randrange(1, 10**9)) for _ in range(rng.choice([0, 3, 20]))]
                          for _ in range(2))
            records.append(protocol.OrderBook(ETH.id, k, k, tuple(bids), tuple(asks)))
    frames = build(records, ts=START)
    value = protocol.encode(protocol.OrderBookDelta(BTC.id, 0, 1, 0, 0, ((1, 1, 0), (2, 2, 1))))
    bad = value[:34] + (3).to_bytes(2, "little") + value[36:]  # says 3 changes, holds 2
    frames.append(protocol.MessageBuilder(1, 3, len(frames) + 1).build(bad, START))
    batch = RowBatch()
    report = Ingestor().ingest(block_of(frames), batch)
    assert report.malformed == 1
    got = {spec.name: rows for spec, rows, _ in batch.tables()}
    for spec in (BY_TYPE[protocol.TLVType.ORDER_BOOK_DELTA], BY_TYPE[protocol.TLVType.ORDER_BOOK]):
        values = [v for frame in frames[:-1] for t, v in protocol.iter_tlvs(frame[protocol.HEADER_SIZE :])
                  if t == spec.tlv_type]
        expected = [spec.rows_from_value(v) for v in values]
        assert np.array_equal(got[spec.name], np.concatenate(expected))

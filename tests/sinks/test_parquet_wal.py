"""sink.parquet after a crash at each step of a flush and of a compaction: nothing acknowledged is
lost, nothing is stored twice, and every file a reader can see is complete.

A crash is staged in-process: the node's files are closed without a flush (what the kernel does
when a process dies) and a new node opens the same directory. A crash *inside* a flush is staged
by making the step after it fail. The real kill -9 is in test_parquet_crash.py.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import duckdb
import pytest
import trio

import nodes.parquet
from alphapulse import protocol
from alphapulse.kinds import build_params
from nodes._parquet import WriterLocked
from nodes.parquet import Parquet, ParquetParams
from tests.sinks import BTC, HOUR_NS, block_of, build, file_size_limit, make_ctx, run_sink


class Crash(Exception):
    """The process dies here."""


def _open(base: Path, **params) -> tuple[Parquet, object]:
    node = Parquet(build_params(ParquetParams, {"path": str(base), "retention_days": 0, **params}))
    ctx = make_ctx("sink.parquet")
    node.open(ctx)
    return node, ctx


def _crash(node: Parquet) -> None:
    node.writer.close()


def _trades(first: int, n: int, ts: int, *, mapping: bool = False) -> protocol.FrameBlock:
    records = [protocol.Trade(BTC.id, 10**8 + k, 1, ts) for k in range(n)]
    if mapping:
        records.insert(0, protocol.mapping_for(BTC))
    return block_of(build(records, ts=ts, first_sequence=first))


def _rows(base: Path) -> list[tuple]:
    return duckdb.connect().execute(
        f"SELECT sequence, symbol FROM read_parquet('{base}/trades/*/*.parquet') ORDER BY sequence").fetchall()


def _wal_file(base: Path) -> Path:
    (path,) = (base / "_wal").glob("wal.*.frames")
    return path


TS = time.time_ns() - 5 * HOUR_NS


async def test_unflushed_rows_are_replayed_after_a_crash(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 100, TS, mapping=True), ctx)
    await node.sync(ctx)
    assert node.statistics()["acknowledged_messages"] == 101
    _crash(node)
    assert not list(base.rglob("*.parquet"))
    node, ctx = _open(base)
    assert ctx.counters["replayed.messages"] == 101
    await node.aclose(ctx)
    assert _rows(base) == [(s, "BTC-USD") for s in range(2, 102)]


async def test_a_flush_that_did_not_commit_is_written_again_once(tmp_path: Path, monkeypatch):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 50, TS), ctx)
    node.handle_block(_trades(51, 50, TS + HOUR_NS), ctx)
    job = node.writer.begin_flush("zstd")

    def die(generation):
        raise Crash

    monkeypatch.setattr(node.writer.wal, "commit", die)
    with pytest.raises(Crash):
        job.run()
    assert len(list(base.rglob("*.g*.parquet"))) == 2  # complete, readable parts: the flush got this far
    _crash(node)
    node, ctx = _open(base)
    assert ctx.counters["recovery.uncommitted_removed"] == 2
    assert ctx.counters["replayed.messages"] == 100
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in range(1, 101)]


async def test_a_commit_whose_wal_was_not_deleted_is_not_replayed(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 30, TS), ctx)
    wal = _wal_file(base)
    saved = wal.read_bytes()
    await node.flush(ctx)
    assert not wal.exists()
    wal.write_bytes(saved)  # the crash came after the checkpoint, before the unlink
    _crash(node)
    node, ctx = _open(base)
    assert ctx.counters["replayed.messages"] == 0
    assert not wal.exists()
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in range(1, 31)]


async def test_parts_a_compaction_absorbed_are_removed_at_start(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base, compact_after_seconds=0)
    node.handle_block(_trades(1, 10, TS), ctx)
    await node.flush(ctx)
    node.handle_block(_trades(11, 10, TS + 1), ctx)
    await node.flush(ctx)
    parts = {p: p.read_bytes() for p in base.rglob("*.g*.parquet")}
    assert len(parts) == 2
    await node.maintain(ctx, retention=False)
    for path, data in parts.items():  # the crash came after the rename, before the unlinks
        path.write_bytes(data)
    assert len(_rows(base)) == 40  # the window the docs describe: rows counted twice until restart
    _crash(node)
    node, ctx = _open(base)
    assert ctx.counters["recovery.duplicates_removed"] == 2
    assert _rows(base) == [(s, None) for s in range(1, 21)]
    await node.aclose(ctx)


async def test_temporary_files_and_a_torn_wal_tail(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 20, TS), ctx)
    await node.flush(ctx)
    node.handle_block(_trades(21, 5, TS), ctx)
    (day,) = (base / "trades").iterdir()
    (day / ".trades_99.g1.parquet.tmp").write_bytes(b"PAR1 half a file")
    (base / "_wal" / ".wal.1.frames.tmp").write_bytes(b"x")
    half = _trades(26, 1, TS).tobytes()[:40]
    with open(_wal_file(base), "ab") as f:
        f.write(half)
    assert len(_rows(base)) == 20  # readers never trip over the temporary file
    _crash(node)
    node, ctx = _open(base)
    assert ctx.counters["recovery.temporary_removed"] == 1
    assert ctx.counters["replayed.messages"] == 5
    assert ctx.counters["replayed.truncated"] == 1
    assert not [name for name in os.listdir(base / "_wal") if name.endswith(".tmp")]
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in range(1, 26)]


async def test_names_survive_flushes_and_restarts(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 1, TS, mapping=True), ctx)
    await node.flush(ctx)
    await node.flush(ctx)  # nothing buffered: no new WAL file, nothing written
    _crash(node)
    node, ctx = _open(base)
    node.handle_block(_trades(3, 1, TS), ctx)  # no mapping in this run's stream
    await node.aclose(ctx)
    assert _rows(base) == [(2, "BTC-USD"), (3, "BTC-USD")]


async def test_one_writer_per_directory(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    with pytest.raises(WriterLocked):
        _open(base)
    await node.aclose(ctx)
    node, ctx = _open(base)  # released on close (and by the kernel when a process dies)
    await node.aclose(ctx)
    shutil.rmtree(base)


async def test_a_stop_that_cancels_a_flush_before_it_starts_loses_nothing(tmp_path: Path):
    """SIGTERM cancels the run loop; a flush whose thread had not started yet is run by aclose."""
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 10, TS), ctx)
    with trio.CancelScope() as scope:
        scope.cancel()
        await node.flush(ctx)  # swaps the batch out and rotates the WAL, then the cancel lands
    node.handle_block(_trades(11, 10, TS), ctx)
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in range(1, 21)]
    assert ctx.counters["flushes"] == 2


def _replay_errors(ctx) -> dict:
    return {k: v for k, v in ctx.counters.items() if k.startswith("replayed.") and k not in
            ("replayed.messages", "replayed.files") and v}


async def test_a_full_disk_keeps_the_rows_and_holds_their_frames_until_the_wal_takes_them(tmp_path: Path):
    """A WAL append that fails part way is cut back off the file; its frames and every later
    block's wait, in order, and no flush starts meanwhile. Once the WAL takes them, the WAL
    alone brings every row back after a crash: no torn frame, no hole, nothing twice."""
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 100, TS, mapping=True), ctx)
    wal = _wal_file(base)
    size = wal.stat().st_size
    with file_size_limit(size + 50):  # room for part of the next frame only
        node.handle_block(_trades(102, 100, TS), ctx)
        node.handle_block(_trades(202, 100, TS), ctx)  # behind the first: held too
        assert wal.stat().st_size == size  # the part of a frame that was written is cut back off
        stats = node.statistics()
        assert stats["backlog_messages"] == 200 and stats["write_failing_seconds"] > 0
        assert ctx.counters["errors.write"] == 1 and node.writer.batch.rows == 300  # the rows are kept
        await node.flush(ctx)
        assert not list(base.rglob("*.parquet")) and not node.statistics()["flush_waiting"]  # no flush yet
        node._log_unlogged(ctx)  # a retry while still full
        assert ctx.counters["errors.write"] == 2 and wal.stat().st_size == size
    node._log_unlogged(ctx)  # the disk takes writes again
    assert node.statistics()["backlog_messages"] == 0 and node.statistics()["write_failing_seconds"] == 0
    await node.sync(ctx)
    _crash(node)
    node, ctx = _open(base)
    assert ctx.counters["replayed.messages"] == 301 and not _replay_errors(ctx)
    await node.aclose(ctx)
    assert _rows(base) == [(s, "BTC-USD") for s in range(2, 302)]


async def test_a_start_on_a_full_disk_keeps_the_replayed_rows_and_holds_new_frames(tmp_path: Path):
    """The start's new WAL file is refused: the node starts anyway, holding what arrives, and
    starts the file at the first try the disk takes. Nothing replayed or held is lost."""
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 100, TS, mapping=True), ctx)
    await node.sync(ctx)
    _crash(node)
    (pending,) = (base / "_wal").glob("wal.*.frames")
    with file_size_limit(10):  # the new file's first write (the names' preamble) fails
        node, ctx = _open(base)
        assert ctx.counters["replayed.messages"] == 101 and node.writer.batch.rows == 100
        assert not node.writer.wal.started and ctx.counters["errors.write"] == 1
        assert node.statistics()["write_failing_seconds"] > 0
        assert [p.name for p in (base / "_wal").glob("*wal.*")] == [pending.name]  # no temporary file left
        node.handle_block(_trades(102, 100, TS), ctx)
        assert node.statistics()["backlog_messages"] == 100
        await node.sync(ctx)  # no current file: nothing to fsync, and no error
        await node.flush(ctx)
        assert not list(base.rglob("*.parquet"))
        node._log_unlogged(ctx)  # a retry while still full
        assert ctx.counters["errors.write"] == 3 and not node.writer.wal.started
    node._log_unlogged(ctx)  # the disk takes writes again: the file starts, the frames follow
    assert node.writer.wal.started and node.statistics()["write_failing_seconds"] == 0
    assert node.statistics()["backlog_messages"] == 0
    await node.sync(ctx)
    _crash(node)
    node, ctx = _open(base)  # both WAL files are replayed: the old one and the one started late
    assert ctx.counters["replayed.messages"] == 202 and not _replay_errors(ctx)  # with the new file's preamble
    await node.aclose(ctx)
    assert _rows(base) == [(s, "BTC-USD") for s in [*range(2, 102), *range(102, 202)]]


async def test_a_start_on_a_full_disk_flushes_the_replayed_rows_once_it_has_room(tmp_path: Path, monkeypatch):
    """With nothing new arriving, the loop's retry starts the WAL file, and the flush follows;
    each retry while the disk is full counts one failed write, not one per step."""
    monkeypatch.setattr(nodes.parquet, "WRITE_RETRY_SECONDS", 0.05)
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 50, TS, mapping=True), ctx)
    await node.sync(ctx)
    _crash(node)
    async with trio.open_nursery() as nursery:
        with file_size_limit(10):
            node = Parquet(build_params(ParquetParams, {"path": str(base), "retention_days": 0}))
            ctx = make_ctx("sink.parquet")
            nursery.start_soon(node.run, ctx)
            await trio.sleep(0.5)
            assert not node.writer.wal.started and node.writer.batch.rows == 50
            assert 5 <= ctx.counters["errors.write"] <= 0.5 / 0.05 + 2 and not ctx.counters["errors.flush"]
        with trio.fail_after(10):
            while not ctx.counters["flushes"]:
                await trio.sleep(0.02)
        assert node.writer.wal.started and node.statistics()["write_failing_seconds"] == 0
        nursery.cancel_scope.cancel()
    await node.aclose(ctx)
    assert _rows(base) == [(s, "BTC-USD") for s in range(2, 52)]


async def test_beyond_the_backlog_blocks_are_dropped_and_counted(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base, backlog_bytes=len(_trades(1, 100, TS).data) + 1)
    node.handle_block(_trades(1, 100, TS), ctx)
    with file_size_limit(_wal_file(base).stat().st_size):
        node.handle_block(_trades(101, 100, TS), ctx)  # held
        node.handle_block(_trades(201, 100, TS), ctx)  # over the bound: dropped, rows and all
    assert ctx.counters["dropped.backlog_full"] == 100 and node.statistics()["backlog_messages"] == 100
    node._log_unlogged(ctx)
    node.handle_block(_trades(301, 100, TS), ctx)
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in [*range(1, 201), *range(301, 401)]]


async def test_a_flush_that_cannot_write_its_parts_keeps_its_rows_and_runs_again(tmp_path: Path):
    base = tmp_path / "pq"
    node, ctx = _open(base)
    node.handle_block(_trades(1, 50, TS), ctx)
    with file_size_limit(200):  # a Parquet part is larger than that (its footer alone)
        await node.flush(ctx)
        assert node.statistics()["flush_waiting"] and ctx.counters["errors.flush"] == 1
        assert not list(base.rglob("*.parquet*"))  # no part, and no temporary file holding the space
        await node.flush(ctx)  # tried again, still full
    assert ctx.counters["errors.flush"] == 2
    node.handle_block(_trades(51, 50, TS), ctx)  # meanwhile, rows go to the next batch
    await node.flush(ctx)  # the same job, now written
    assert not node.statistics()["flush_waiting"] and node.statistics()["write_failing_seconds"] == 0
    await node.aclose(ctx)
    assert _rows(base) == [(s, None) for s in range(1, 101)] and ctx.counters["flushes"] == 2


async def test_the_running_node_writes_what_it_held_once_the_disk_takes_it(tmp_path: Path, monkeypatch):
    """The node as the host runs it, its loop doing the retries."""
    monkeypatch.setattr(nodes.parquet, "WRITE_RETRY_SECONDS", 0.05)
    base = tmp_path / "pq"
    frames = [build([protocol.mapping_for(BTC)], ts=TS)[0]]
    frames += build([protocol.Trade(BTC.id, 10**8 + k, 1, TS) for k in range(600)], ts=TS, first_sequence=2)
    async with run_sink("sink.parquet", {"path": str(base), "flush_seconds": 0.2, "retention_days": 0}) as run:
        await run.send(frames[:201], per_block=50)
        await run.wait_received(201)
        with trio.fail_after(10):
            while run.ctx.counters["flushes"] < 1:
                await trio.sleep(0.02)
        with file_size_limit(_wal_file(base).stat().st_size + 50):
            await run.send(frames[201:401], per_block=50)
            await run.wait_received(401)
            with trio.fail_after(10):
                while run.ctx.counters["errors.write"] < 3:  # the loop's retries fail too
                    await trio.sleep(0.02)
            assert run.node.statistics()["backlog_messages"] == 200
            health = run.host.health()
            assert health["status"] == "degraded" and "holding 200 messages' frames" in health["trouble"]
            tries, cpu = run.ctx.counters["errors.write"], time.process_time()
            await trio.sleep(0.5)  # past the flush deadline: the loop retries on its timer, it does not spin
            assert run.ctx.counters["errors.write"] - tries <= 0.5 / nodes.parquet.WRITE_RETRY_SECONDS + 3
            assert time.process_time() - cpu < 0.25  # a loop turning on a deadline long past uses the whole 0.5 s
        await run.send(frames[401:], per_block=50)
        await run.wait_received(len(frames))
        with trio.fail_after(10):
            while run.node.statistics()["backlog_messages"] or run.node.statistics()["write_failing_seconds"]:
                await trio.sleep(0.02)
        counters = run.ctx.counters
        assert run.host.health()["trouble"] == ""
    assert _rows(base) == [(s, "BTC-USD") for s in range(2, 602)]
    assert not counters["dropped.backlog_full"] and not counters["errors.handler"]

"""kill -9 of a real sink.parquet process mid-stream: no file a reader trips over, and after a
restart every acknowledged row is there exactly once.

The node runs as ``alphapulse node --plan`` (the supervisord command line) and is fed through a
real publisher socket, flushing many times a second, so the kill lands while it writes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import trio

from alphapulse import protocol
from alphapulse.runtime import ControlError, open_publisher, request_async
from tests.sinks import BTC, HOUR_NS, block_of, build

BLOCK = 200


def _plan(tmp: str, base: Path) -> dict:
    return {"nodes": {"pq": {
        "kind": "sink.parquet", "module": "nodes.parquet", "source_id": 9,
        "params": {"path": str(base), "retention_days": 0, "row_group_rows": 1000, "flush_seconds": 0.05,
                   "wal_fsync_seconds": 0.02},
        "sockets": {"data": f"{tmp}/d.sock", "control": f"{tmp}/c.sock"},
        "inputs": [{"node": "up", "socket": f"{tmp}/up.sock", "overflow": "block", "queue": 1 << 16}],
        "restart": {"stopwaitsecs": 10},
    }}}


async def _start(plan_path: str, log: Path) -> trio.Process:
    with open(log, "ab") as out:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "alphapulse", "node", "--plan", plan_path, "pq"],
            stdout=out, stderr=subprocess.STDOUT)


async def _stats(control: str) -> dict | None:
    try:
        return await request_async(control, "stats")
    except (OSError, ControlError):
        return None  # not listening yet, or gone


async def test_kill_9_mid_write_loses_nothing_acknowledged(tmp_path: Path):
    base = tmp_path / "pq"
    log = tmp_path / "node.log"
    start = time.time_ns() - 3 * HOUR_NS
    with tempfile.TemporaryDirectory(prefix="apk", dir="/tmp") as tmp:
        plan_path = f"{tmp}/plan.json"
        Path(plan_path).write_text(json.dumps(_plan(tmp, base)))
        control = f"{tmp}/c.sock"
        async with open_publisher(f"{tmp}/up.sock", source_id=1) as publisher:
            proc = await _start(plan_path, log)
            sent = 0

            async def stream() -> None:
                nonlocal sent
                while True:
                    frames = build([protocol.Trade(BTC.id, 10**8 + sent + k, 1, 0) for k in range(BLOCK)],
                                   ts=[start + (sent + k) * 10**7 for k in range(BLOCK)], first_sequence=sent + 1)
                    publisher.publish_nowait(block_of(frames))
                    sent += BLOCK  # out now, whatever happens while waiting for space
                    await publisher.wait_for_space()
                    await trio.sleep(0.001)

            acknowledged = 0
            async with trio.open_nursery() as nursery:
                with trio.fail_after(60):
                    while not any(s.name == "pq" for s in publisher.statistics().subscribers):
                        await trio.sleep(0.02)
                    nursery.start_soon(stream)
                    while True:
                        stats = await _stats(control)
                        if stats and stats["counters"].get("flushes", 0) >= 8:
                            acknowledged = stats["kind_stats"]["acknowledged_messages"]
                            break
                        await trio.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
                nursery.cancel_scope.cancel()
            assert await proc.wait() == -signal.SIGKILL
            assert acknowledged >= 1000
            # published while it is down: only the publisher holds these. Without them the gap
            # depended on the kill landing while frames were still in flight to it
            frames = build([protocol.Trade(BTC.id, 10**8 + sent + k, 1, 0) for k in range(BLOCK)],
                           ts=[start + (sent + k) * 10**7 for k in range(BLOCK)], first_sequence=sent + 1)
            publisher.publish_nowait(block_of(frames))
            sent += BLOCK

            # right after the kill: every visible file is whole, the hidden temporary ones are ignored
            visible = list(base.glob("trades/*/*.parquet"))
            assert visible
            for path in visible:
                pq.read_metadata(path)
            before = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{base}/trades/*/*.parquet')")
            assert before.fetchone()[0] <= sent

            # restart: recovery and WAL replay; it resumes where the stored rows end, so what it had
            # not stored when killed, and what came while it was down, is asked for again (the
            # publisher's heads show the gap at once, and it still holds the frames) rather than
            # skipped; then a clean stop (SIGTERM) flushes the rest
            proc = await _start(plan_path, log)
            try:
                with trio.fail_after(60):
                    while not any(s.name == "pq" and s.connected for s in publisher.statistics().subscribers):
                        await trio.sleep(0.02)
                    frames = build([protocol.Trade(BTC.id, 10**8 + sent + k, 1, 0) for k in range(BLOCK)],
                                   ts=[start + (sent + k) * 10**7 for k in range(BLOCK)], first_sequence=sent + 1)
                    publisher.publish_nowait(block_of(frames))  # and the stream goes on
                    sent += BLOCK
                    while not (stats := await _stats(control)) or stats["inputs"][0]["sequence"]["delivered"] < 1:
                        await trio.sleep(0.05)
                    while (stats := await _stats(control)) and stats["inputs"][0]["sequence"]["open_gaps"]:
                        await trio.sleep(0.05)
                link = stats["inputs"][0]["sequence"]
                assert stats["counters"]["resumed_sources"] == 1 and link["joined_midstream"] == 0
                assert link["gaps_recovered"] == link["gaps_detected"] == 1 and link["messages_lost"] == 0
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    assert await proc.wait() == 0, log.read_text()[-3000:]
            finally:
                if proc.returncode is None:  # failed above: do not leave the node running
                    proc.kill()
    sequences = [r[0] for r in duckdb.connect().execute(
        f"SELECT sequence FROM read_parquet('{base}/trades/*/*.parquet') ORDER BY sequence").fetchall()]
    assert len(sequences) >= acknowledged, "acknowledged rows were lost"
    assert sequences == list(range(1, sent + 1)), "a row is missing or stored twice"

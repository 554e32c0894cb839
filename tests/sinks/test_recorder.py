"""sink.recorder: the files hold exactly the frames received, rotate by size and time, survive a
crash, and play back to the same messages."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import trio

import nodes.recorder
from alphapulse import protocol
from alphapulse.kinds import build_params
from alphapulse.runtime import make_sequence, positions_in_frame_files, read_positions
from alphapulse.testing import run_node
from nodes.recorder import Recorder, RecorderParams, file_name
from tests.sinks import BTC, ETH, block_of, build, file_size_limit, make_ctx, market_records, run_sink

START = 1_714_557_600 * 10**9


def _stream(**sizes) -> list[bytes]:
    records = market_records(START, **sizes)
    return build([r for r, _ in records], ts=[t for _, t in records])


def _files(directory: Path) -> list[Path]:
    """The recording's files (a reader skips names that start with a dot: the checkpoint)."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def _whole_frames(data: bytes) -> bool:
    found = protocol.scan_frames(np.frombuffer(data, np.uint8), final=True)
    return found.skipped == 0 and int(found.errors.sum()) == 0 and int(found.sizes.sum()) == len(data)


async def test_recorded_bytes_are_the_frames_received(tmp_path: Path):
    frames = _stream()
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec")}) as run:
        await run.send(frames, per_block=257)
        await run.wait_received(len(frames))
        counters = run.ctx.counters
    (only,) = _files(tmp_path / "rec")
    assert only.name.endswith(".frames") and only.name.startswith("rec-")
    assert only.read_bytes() == b"".join(frames)
    assert counters["recorded.messages"] == len(frames)
    assert counters["files.finished"] == 1


async def test_size_rotation_splits_at_frame_boundaries(tmp_path: Path):
    frames = _stream(trades=600)
    bids = tuple((10**8 * (j + 1), 1) for j in range(300))
    big = build([protocol.OrderBook(ETH.id, 0, 1, bids, ())], ts=START, source=4)[0]  # one frame > 4096 bytes
    frames[100:100] = [big]
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec"), "rotate_bytes": 4096}) as run:
        await run.send(frames, per_block=300)
        await run.wait_received(len(frames))
    files = _files(tmp_path / "rec")
    names = [p.name for p in files]
    assert names == sorted(names) and len(set(names)) == len(names) and len(files) > 10
    contents = [p.read_bytes() for p in files]
    assert b"".join(contents) == b"".join(frames)
    assert all(_whole_frames(c) for c in contents)
    assert [c for c in contents if len(c) > 4096] == [big]
    first_frame = [32 + int.from_bytes(c[24:28], "little") for c in contents]
    assert all(len(c) + n > 4096 for c, n in zip(contents, first_frame[1:], strict=False))  # only full files rotate


async def test_time_rotation(tmp_path: Path):
    first, second = _stream(trades=50)[:30], _stream(trades=50)[30:]
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec"), "rotate_seconds": 1,
                                          "fsync_seconds": 0}) as run:
        await run.send(first)
        with trio.fail_after(10):
            while run.ctx.counters["files.finished"] < 1:
                await trio.sleep(0.02)
        await run.send(second)
        await run.wait_received(len(first) + len(second))
        assert run.ctx.counters["fsyncs"] >= 2  # fsync_seconds 0: after every block
    files = _files(tmp_path / "rec")
    assert files[0].read_bytes() == b"".join(first)
    assert b"".join(p.read_bytes() for p in files[1:]) == b"".join(second)


async def test_a_crash_leaves_an_open_file_that_the_next_start_repairs(tmp_path: Path):
    directory = tmp_path / "rec"
    directory.mkdir()
    frames = _stream(trades=40)
    torn = directory / file_name(START).replace(".frames", ".frames.open")
    torn.write_bytes(b"".join(frames) + frames[0][:50])
    (directory / file_name(START + 10**9).replace(".frames", ".frames.open")).write_bytes(b"")
    node = Recorder(build_params(RecorderParams, {"path": str(directory), "fsync_seconds": 0}))
    ctx = make_ctx("sink.recorder")
    node.open(ctx)
    node.handle_block(block_of(frames[:5]), ctx)
    await node.aclose(ctx)
    repaired, newer = _files(directory)
    assert repaired.name == file_name(START) and repaired.read_bytes() == b"".join(frames)
    assert newer.name > repaired.name and newer.read_bytes() == b"".join(frames[:5])
    assert ctx.counters["recovered.files"] == 1 and ctx.counters["recovered.bytes_cut"] == 50


async def test_keep_files_deletes_the_oldest(tmp_path: Path):
    frames = _stream(trades=800)
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec"), "rotate_bytes": 4096,
                                          "keep_files": 3}) as run:
        await run.send(frames, per_block=50)
        await run.wait_received(len(frames))
    files = _files(tmp_path / "rec")
    assert len(files) <= 4  # three kept, plus the last one finished at the stop
    assert b"".join(frames).endswith(b"".join(p.read_bytes() for p in files))


async def test_a_recording_reads_back_to_the_same_messages(tmp_path: Path):
    frames = _stream(trades=300)
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec"), "rotate_bytes": 8192}) as run:
        await run.send(frames, per_block=64)
        await run.wait_received(len(frames))
    decoder = protocol.FrameDecoder()
    for path in _files(tmp_path / "rec"):
        decoder.receive_data(path.read_bytes())
    decoder.receive_data(b"")
    replayed = []
    while (block := decoder.next_block()) is not protocol.NEED_DATA:
        replayed.extend(bytes(f) for f in block.frames())
    assert replayed == frames
    assert decoder.statistics().total_errors == 0
    assert [protocol.decode_message(f) for f in replayed] == [protocol.decode_message(f) for f in frames]


async def test_the_replay_source_plays_a_recording_back(tmp_path: Path):
    """Through ``source.replay``: the same headers and TLVs, in order, across rotated files."""
    frames = build([protocol.mapping_for(BTC), *(protocol.Trade(BTC.id, 10**8 + k, 1, START) for k in range(200))],
                   ts=START)
    async with run_sink("sink.recorder", {"path": str(tmp_path / "rec"), "rotate_bytes": 4096}) as run:
        await run.send(frames, per_block=50)
        await run.wait_received(len(frames))
    async with run_node("source.replay", {"path": str(tmp_path / "rec"), "speed": 0}) as node:
        await node.wait_for(lambda r: len(r.messages) >= len(frames), timeout=30)
        got = [(m.header, m.tlvs) for m in node.messages]
    expected = [protocol.decode_message(f) for f in frames]
    assert got == [(m.header, m.tlvs) for m in expected]


def test_file_names_sort_in_time_order():
    stamps = [START, START + 1000, START + 10**9, START + 86_400 * 10**9]
    names = [file_name(t) for t in stamps]
    assert names == sorted(names) and len(set(names)) == 4
    assert names[0] == "rec-20240501T100000.000000Z.frames"
    assert os.path.splitext(names[0])[1] == ".frames"


async def test_a_stop_that_cancels_finishing_a_file_loses_nothing(tmp_path: Path):
    frames = _stream(trades=20)
    node = Recorder(build_params(RecorderParams, {"path": str(tmp_path / "rec")}))
    ctx = make_ctx("sink.recorder")
    node.open(ctx)
    node.handle_block(block_of(frames[:10]), ctx)
    node._rotate(ctx)
    with trio.CancelScope() as scope:
        scope.cancel()
        await node._finish_pending(ctx)  # the cancel lands before the worker thread starts
    node.handle_block(block_of(frames[10:]), ctx)
    await node.aclose(ctx)
    files = _files(tmp_path / "rec")
    assert [p.suffix for p in files] == [".frames", ".frames"]
    assert b"".join(p.read_bytes() for p in files) == b"".join(frames)


def test_resume_positions_are_each_sources_last_whole_frame(tmp_path: Path):
    directory = tmp_path / "rec"
    directory.mkdir()
    node = Recorder(build_params(RecorderParams, {"path": str(directory)}))
    assert node.resume_positions() == {}
    a = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(7, 1))
    b = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 4, make_sequence(2, 10))
    trade = protocol.Trade(instrument_id=BTC.id, price=1, quantity=1, exchange_ts_ns=0)
    older = [a.build(trade, 1) for _ in range(5)] + [b.build(trade, 1) for _ in range(3)]
    newer = [a.build(trade, 1) for _ in range(2)]
    (directory / file_name(START)).write_bytes(b"".join(older))
    torn = directory / file_name(START + 10**9).replace(".frames", ".frames.open")
    torn.write_bytes(b"".join(newer) + a.build(trade, 1)[:40])  # a kill mid-write: the torn frame is not had
    assert node.resume_positions() == {3: make_sequence(7, 7), 4: make_sequence(2, 12)}


async def test_a_restarted_recorder_asks_for_what_came_while_it_was_down(tmp_path: Path):
    """Without ``resume_positions`` the new process joined mid-stream and the 50 messages published
    while it was down were a silent hole in the recording."""
    from alphapulse.runtime import NodeHost, open_publisher

    sockets = tempfile.mkdtemp(prefix="apr", dir="/tmp")  # short: socket paths stay < 107 bytes
    upstream = os.path.join(sockets, "up.sock")
    entry = {"kind": "sink.recorder", "params": {"path": str(tmp_path / "rec"), "fsync_seconds": 0}, "source_id": 12,
             "relay_domain": int(protocol.RelayDomain.MARKET_DATA), "inputs": [{"node": "up", "socket": upstream}],
             "sockets": {"control": os.path.join(sockets, "c.sock")}}
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(5, 1))
    trade = protocol.Trade(instrument_id=BTC.id, price=1, quantity=1, exchange_ts_ns=0)

    def publish(pub, count: int) -> None:
        pub.publish_nowait(protocol.FrameBlock.from_bytes(b"".join(builder.build(trade, 1) for _ in range(count))))

    async def recorder_until(pub, send: int, recorded: int) -> NodeHost:
        async with trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"rec": entry}}, "rec").run)
            with trio.fail_after(10):
                while not any(s.ready for s in pub._subscribers):
                    await trio.sleep(0.01)
                publish(pub, send)
                while host.ctx.counters["recorded.messages"] < recorded:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return host

    async with open_publisher(upstream, source_id=3) as pub:
        await recorder_until(pub, 100, 100)
        publish(pub, 50)  # nobody records these now; the publisher's retransmit buffer keeps them
        second = await recorder_until(pub, 10, 60)
    link = second.links[0].statistics().sequence
    assert (link["gaps_detected"], link["gaps_recovered"], link["messages_recovered"]) == (1, 1, 50)
    assert second.ctx.counters["resumed_sources"] == 1
    recording = b"".join(path.read_bytes() for path in _files(tmp_path / "rec"))
    found = protocol.scan_frames(np.frombuffer(recording, np.uint8), final=True)
    sources, sequences = protocol.header_columns(recording, found.offsets)[:2]
    assert set(sources.tolist()) == {3}
    assert sequences.tolist() == [make_sequence(5, k) for k in range(1, 161)]  # all of it, once, in order


async def test_a_source_quiet_for_many_files_is_resumed_from_the_checkpoint(tmp_path: Path):
    """A source whose last frames lie further back than the newest files read at a restart: the
    checkpoint (``.positions.json``) still knows where it left off, so what it sent while the
    recorder was down is asked for. Without it the source joined at the relay's head: a silent hole."""
    from alphapulse.runtime import NodeHost, open_publisher, read_positions
    from nodes.recorder import RESUME_SCAN_FILES

    sockets = tempfile.mkdtemp(prefix="apr", dir="/tmp")
    upstream = os.path.join(sockets, "up.sock")
    directory = tmp_path / "rec"
    entry = {"kind": "sink.recorder", "params": {"path": str(directory), "rotate_bytes": 4096},
             "source_id": 12, "relay_domain": int(protocol.RelayDomain.MARKET_DATA),
             "inputs": [{"node": "up", "socket": upstream}], "sockets": {"control": os.path.join(sockets, "c.sock")}}
    quiet = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(5, 1))
    busy = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 4, make_sequence(5, 1))
    trade = protocol.Trade(instrument_id=BTC.id, price=1, quantity=1, exchange_ts_ns=0)

    def publish(pub, builder, count: int) -> None:
        pub.publish_nowait(protocol.FrameBlock.from_bytes(b"".join(builder.build(trade, 1) for _ in range(count))))

    async def recorder_until(pub, sends, recorded: int) -> NodeHost:
        async with trio.open_nursery() as nursery:
            host = await nursery.start(NodeHost({"nodes": {"rec": entry}}, "rec").run)
            with trio.fail_after(10):
                while not any(s.ready for s in pub._subscribers):
                    await trio.sleep(0.01)
                for builder, count in sends:
                    publish(pub, builder, count)
                    await trio.sleep(0.05)
                while host.ctx.counters["recorded.messages"] < recorded:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        return host

    async with open_publisher(upstream, source_id=3, retransmit_capacity=4096) as pub:
        await recorder_until(pub, [(quiet, 5), (busy, 600)], 605)  # ~70 frames a file: the quiet source is far back
        assert len(_files(directory)) > RESUME_SCAN_FILES + 2
        assert read_positions(directory) == {3: make_sequence(5, 5), 4: make_sequence(5, 600)}
        publish(pub, quiet, 7)  # while nobody records: the retransmit buffer keeps them
        second = await recorder_until(pub, [], 7)  # a new process: its own counters
    link = second.links[0].statistics().sequence
    assert (link["gaps_detected"], link["gaps_recovered"], link["messages_recovered"]) == (1, 1, 7)
    recording = b"".join(path.read_bytes() for path in _files(directory))
    found = protocol.scan_frames(np.frombuffer(recording, np.uint8), final=True)
    sources, sequences = protocol.header_columns(recording, found.offsets)[:2]
    assert sequences[sources == 3].tolist() == [make_sequence(5, k) for k in range(1, 13)]  # all of it, once
    assert read_positions(directory)[3] == make_sequence(5, 12)


def _recorded(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.glob("rec-*")))


async def test_a_full_disk_tears_no_frame_and_loses_nothing_the_backlog_holds(tmp_path: Path, monkeypatch):
    """The node as the host runs it: a write that fails part way is cut back off the file, what
    arrives meanwhile waits in order, and once the disk takes writes again the retry writes it
    all: the recording is every frame, whole, in order."""
    monkeypatch.setattr(nodes.recorder, "WRITE_RETRY_SECONDS", 0.05)
    frames = _stream(trades=900)
    first, stuck, after = frames[:400], frames[400:700], frames[700:]
    directory = tmp_path / "rec"
    async with run_sink("sink.recorder", {"path": str(directory), "fsync_seconds": 0, "rotate_seconds": 1}) as run:
        await run.send(first, per_block=100)
        await run.wait_received(len(first))
        with file_size_limit(len(b"".join(first)) + 50):  # room for part of the next frame only
            await run.send(stuck, per_block=100)
            await run.wait_received(len(first) + len(stuck))
            with trio.fail_after(10):
                while run.ctx.counters["errors.write"] < 3:  # the retries fail too
                    await trio.sleep(0.02)
            assert _recorded(directory) == b"".join(first)  # no torn frame, however many tries
            tries = run.ctx.counters["errors.write"]
            await trio.sleep(1.2)  # past the rotation: the loop retries on its timer, it does not spin
            assert run.ctx.counters["errors.write"] - tries <= 1.2 / nodes.recorder.WRITE_RETRY_SECONDS + 3
            stats = run.node.statistics()
            assert stats["backlog_messages"] == len(stuck) and stats["backlog_bytes"] == len(b"".join(stuck))
            assert stats["write_failing_seconds"] > 0
            health = run.host.health()  # status names it below its table
            assert health["status"] == "degraded" and "File too large" in health["trouble"]
            assert f"holding {len(stuck):,} messages" in health["trouble"]
        await run.send(after, per_block=100)  # behind what waits: written after it, not before
        await run.wait_received(len(frames))
        with trio.fail_after(10):
            while run.node.statistics()["backlog_messages"]:
                await trio.sleep(0.02)
        counters = run.ctx.counters
        assert run.host.health()["status"] == "healthy" and run.host.health()["trouble"] == ""
    assert _recorded(directory) == b"".join(frames) and _whole_frames(_recorded(directory))
    assert counters["recorded.messages"] == len(frames) and not counters["dropped.backlog_full"]
    assert not counters["errors.handler"]  # the breaker saw no failure: nothing was skipped


async def test_beyond_the_backlog_frames_are_dropped_and_counted(tmp_path: Path):
    frames = _stream(trades=600)
    node = Recorder(build_params(RecorderParams, {"path": str(tmp_path / "rec"), "fsync_seconds": 0,
                                                  "backlog_bytes": len(b"".join(frames[100:300]))}))
    ctx = make_ctx("sink.recorder")
    node.open(ctx)
    node.handle_block(block_of(frames[:100]), ctx)
    with file_size_limit(len(b"".join(frames[:100]))):  # full: not one byte more
        node.handle_block(block_of(frames[100:200]), ctx)
        node.handle_block(block_of(frames[200:300]), ctx)
        node.handle_block(block_of(frames[300:400]), ctx)  # over the bound: dropped
        node._write_backlog(ctx)  # a retry while still full changes nothing
    assert ctx.counters["dropped.backlog_full"] == 100 and node.statistics()["backlog_messages"] == 200
    node._write_backlog(ctx)  # the disk takes writes again
    node.handle_block(block_of(frames[400:]), ctx)
    await node.aclose(ctx)
    assert _recorded(tmp_path / "rec") == b"".join(frames[:300] + frames[400:])  # one hole, counted
    assert ctx.counters["recorded.messages"] == len(frames) - 100


async def test_a_rotation_the_disk_refuses_keeps_writing_the_current_file(tmp_path: Path, monkeypatch):
    """A new file that cannot be made (no inode, no space) must not leave the recorder writing
    to the one it is finishing."""
    frames = _stream(trades=300)
    node = Recorder(build_params(RecorderParams, {"path": str(tmp_path / "rec"), "rotate_bytes": 4096,
                                                  "fsync_seconds": 0}))
    ctx = make_ctx("sink.recorder")
    node.open(ctx)
    refuse = [True]
    real_open = os.open

    def no_new_files(path, flags, *args):
        if refuse[0] and flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(nodes.recorder.os, "open", no_new_files)
    node.handle_block(block_of(frames[:150]), ctx)  # fills the first file, cannot start the next
    assert ctx.counters["errors.write"] == 1 and node.statistics()["backlog_messages"] > 0
    assert not node._finishing  # the current file is not handed over to be finished
    refuse[0] = False
    node._write_backlog(ctx)
    node.handle_block(block_of(frames[150:]), ctx)
    await node.aclose(ctx)
    files = _files(tmp_path / "rec")
    assert len(files) > 2 and all(_whole_frames(p.read_bytes()) for p in files)
    assert _recorded(tmp_path / "rec") == b"".join(frames)


async def test_a_checkpoint_the_disk_refuses_is_written_with_the_next_finished_file(tmp_path: Path, monkeypatch):
    frames = _stream(trades=300)
    directory = tmp_path / "rec"
    node = Recorder(build_params(RecorderParams, {"path": str(directory), "rotate_bytes": 4096, "fsync_seconds": 0}))
    ctx = make_ctx("sink.recorder")
    node.open(ctx)
    write_positions, refused = nodes.recorder.write_positions, []

    def full_disk(*args):
        refused.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nodes.recorder, "write_positions", full_disk)
    node.handle_block(block_of(frames[:100]), ctx)
    await node._finish_pending(ctx)  # the node goes on: the files are whole, only the checkpoint waits
    assert refused and ctx.counters["errors.checkpoint"] == len(refused) and ctx.counters["files.finished"] >= 1
    monkeypatch.setattr(nodes.recorder, "write_positions", write_positions)
    node.handle_block(block_of(frames[100:]), ctx)
    await node.aclose(ctx)
    # every file is in it, those finished while it was refused too
    assert read_positions(directory) == positions_in_frame_files(_files(directory))
    assert _recorded(directory) == b"".join(frames)

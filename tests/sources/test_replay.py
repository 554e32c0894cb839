"""``source.replay`` plays recorder files back bit-for-bit; ``alphapulse replay-server`` serves
captures to the real adapters."""

from __future__ import annotations

import functools
import os

import trio
from trio_websocket import HandshakeError, open_websocket_url

from alphapulse import protocol
from alphapulse.cli import main
from alphapulse.protocol import MessageBuilder, Quote, RelayDomain, Trade
from alphapulse.testing import run_node
from nodes.replay import due_offsets, recording_files


def recorded_frames(n: int = 3000) -> list[bytes]:
    """What a recorder would hold: messages of two producers, interleaved, with their headers."""
    builders = {5: MessageBuilder(RelayDomain.MARKET_DATA, 5, (7 << 40) | 1),
                9: MessageBuilder(RelayDomain.MARKET_DATA, 9, (3 << 40) | 100)}
    frames = []
    for i in range(n):
        source = 5 if i % 3 else 9
        ts = 1_786_309_548_000_000_000 + i * 1000
        if i % 2:
            record = Trade(instrument_id=11 + i % 4, price=100_00000000 + i, quantity=i + 1, exchange_ts_ns=ts, side=1)
        else:
            record = Quote(instrument_id=11, bid_price=i, bid_qty=1, ask_price=i + 1, ask_qty=2, exchange_ts_ns=ts)
        frames.append(builders[source].build(record, ts))
    return frames


def write_rotated(directory: str, frames: list[bytes], cut: int) -> bytes:
    """Two rotated files, split in the middle of a frame (a frame may span files)."""
    data = b"".join(frames)
    with open(os.path.join(directory, "rec-0001.bin"), "wb") as f:
        f.write(data[:cut])
    with open(os.path.join(directory, "rec-0002.bin"), "wb") as f:
        f.write(data[cut:])
    return data


async def test_recording_plays_back_bit_for_bit(tmp_path) -> None:
    frames = recorded_frames()
    data = write_rotated(str(tmp_path), frames, cut=len(b"".join(frames)) // 2 + 7)
    async with run_node("source.replay", {"path": str(tmp_path), "speed": 0}) as run:
        await run.wait_for(lambda r: len(r.messages) == len(frames), timeout=60)
        replayed = b"".join(
            protocol.encode_message(m.header.relay_domain, m.header.source, m.header.sequence, m.header.timestamp_ns,
                                    b"".join(protocol.encode(t) for t in m.tlvs))
            for m in run.messages)
        assert replayed == data  # same headers (sources, sequences, timestamps), same TLVs, same CRCs
        assert [m.header.checksum for m in run.messages] == [protocol.unpack_header(f).checksum for f in frames]
        assert run.link.statistics().sequence["gaps_detected"] == 0
        # the pass is counted once the node's publish loop resumes after the last frame
        await run.wait_for(lambda r: r.node.statistics()["passes"] == 1, timeout=10)


async def test_loop_restamps_later_passes(tmp_path) -> None:
    frames = recorded_frames(200)
    (tmp_path / "one.bin").write_bytes(b"".join(frames))
    async with run_node("source.replay", {"path": str(tmp_path / "one.bin"), "speed": 0, "loop": True},
                        source_id=77) as run:
        await run.wait_for(lambda r: len(r.messages) >= 3 * len(frames), timeout=60)
        first, second = run.messages[: len(frames)], run.messages[len(frames) : 2 * len(frames)]
        assert {m.header.source for m in first} == {5, 9}
        assert {m.header.source for m in second} == {77}
        assert [m.tlvs for m in first] == [m.tlvs for m in second]
        assert run.link.statistics().sequence["duplicates"] == 0


async def test_damaged_recording_is_counted_not_fatal(tmp_path) -> None:
    frames = recorded_frames(100)
    bad = bytearray(frames[10])
    bad[-1] ^= 0xFF  # bad CRC
    (tmp_path / "r.bin").write_bytes(b"".join(frames[:10]) + bytes(bad) + b"".join(frames[11:]) + frames[0][:20])
    async with run_node("source.replay", {"path": str(tmp_path / "r.bin"), "speed": 0}) as run:
        await run.wait_for(lambda r: r.node.passes == 1, timeout=60)
        # frame 10's source shows a gap downstream: held, resend unavailable, then released
        await run.wait_for(lambda r: len(r.messages) == 99, timeout=60)
        assert run.link.statistics().sequence["gaps_detected"] == 1
        assert run.ctx.counters["errors.recording_bad_checksum"] == 1
        assert run.ctx.counters["errors.recording_truncated"] == 1


async def test_missing_recording_is_reported(tmp_path) -> None:
    async with run_node("source.replay", {"path": str(tmp_path / "nothing")}) as run:
        await run.wait_for(lambda r: r.ctx.counters["errors.no_recording"] == 1, timeout=60)
        assert run.stats()["counters"]["errors"] == 1


async def test_recorded_speed_keeps_the_order_and_all_frames(tmp_path) -> None:
    frames = recorded_frames(50)  # 1 µs apart: 49 µs of recording at speed 1
    (tmp_path / "r.bin").write_bytes(b"".join(frames))
    async with run_node("source.replay", {"path": str(tmp_path / "r.bin"), "speed": 1}) as run:
        await run.wait_for(lambda r: len(r.messages) == 50, timeout=60)
        assert [m.header.timestamp_ns for m in run.messages] == [protocol.unpack_header(f).timestamp_ns
                                                                for f in frames]


def test_pacing_and_files() -> None:
    assert due_offsets([10**9, 2 * 10**9, 4 * 10**9], 10**9, 2.0) == [0.0, 0.5, 1.5]
    assert due_offsets([5, 3], 5, 1.0) == [0.0, 0.0]  # a clock step back never waits
    assert recording_files("/nonexistent/x") == ["/nonexistent/x"]


async def test_replay_server_cli_serves_a_capture(shared_data) -> None:
    path = str(shared_data / "coinbase" / "COINBASE.ws.28.0")
    assert main(["replay-server", "/nonexistent", "--duration", "0.1"]) == 2
    port_holder: list[int] = []

    async def serve() -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port_holder.append(s.getsockname()[1])
        await trio.to_thread.run_sync(functools.partial(
            main, ["replay-server", path, "--port", str(port_holder[0]), "--speed", "0", "--duration", "3"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with trio.fail_after(10):
            while True:
                await trio.sleep(0.05)
                try:
                    async with open_websocket_url(f"ws://127.0.0.1:{port_holder[0]}/") as ws:
                        await ws.send_message('{"type":"subscribe"}')
                        first = await ws.get_message()
                        break
                except (OSError, HandshakeError):  # not listening yet
                    continue
        assert '"type":"subscriptions"' in first

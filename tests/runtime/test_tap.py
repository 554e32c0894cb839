"""``alphapulse tap``: the sans-IO view of a node's output, and the command against a real
publisher on a real Unix socket, found through a plan compiled from a real topology file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import trio

from alphapulse import protocol
from alphapulse.cli import main
from alphapulse.runtime import TapView, format_message, make_sequence, open_publisher
from alphapulse.supervise import RunBase
from alphapulse.supervise._apply import compile_file
from tests.sinks import BTC, ETH

SOURCE = 7


def _frames(records, *, epoch: int = 5, first: int = 1, source: int = SOURCE) -> list[bytes]:
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, source, make_sequence(epoch, first))
    return [builder.build(r, 1_700_000_000_000_000_000 + k) for k, r in enumerate(records)]


def _block(frames: list[bytes]) -> protocol.FrameBlock:
    return protocol.FrameBlock.from_bytes(b"".join(frames))


def _trades(n: int, instrument=BTC) -> list:
    return [protocol.Trade(instrument.id, 6_500_000_000_000 + k, 10**7, 0, protocol.Side.BUY) for k in range(n)]


# -- the view, without sockets ---------------------------------------------------------------------
def test_messages_show_with_their_header_and_named_instruments() -> None:
    view = TapView()
    shown = view.feed(_block(_frames([*_trades(1), protocol.mapping_for(BTC), *_trades(1)])))
    assert [m["seq"] for m in shown] == [1, 2, 3] and {m["epoch"] for m in shown} == {5}
    assert shown[0]["records"][0]["instrument"] == str(BTC.id)  # before its mapping: the id
    assert shown[2]["records"][0] == {"type": "Trade", "instrument": "coinbase:BTC-USD", "price": "65000",
                                      "quantity": "0.1", "exchange_ts_ns": 0, "side": 1, "flags": 0}
    assert shown[2]["time"] == "2023-11-14T22:13:20.000000002Z" and shown[2]["domain"] == "market_data"
    assert json.loads(json.dumps(shown)) == shown
    assert view.summary().unnamed == 0  # named later: no longer missing a name


def test_logfmt_puts_a_message_on_one_line_for_reading_by_eye() -> None:
    view = TapView()
    book = protocol.OrderBook(BTC.id, 5, 9, ((6_500_000_000_000, 15 * 10**7), (6_499_950_000_000, 2 * 10**8)), ())
    trade, shown_book, mapping = view.feed(_block(_frames([*_trades(1), book, protocol.mapping_for(ETH)])))
    assert format_message(trade, "logfmt") == (
        "time=2023-11-14T22:13:20.000000000Z source=7 seq=1 | type=Trade instrument=" + str(BTC.id)
        + " price=65000 quantity=0.1 exchange_ts_ns=0 side=1 flags=0")
    assert format_message(shown_book, "logfmt").endswith(" bids=65000/1.5,64999.5/2 asks=\"\"")  # none: empty
    assert format_message(mapping, "logfmt").endswith('canonical="spot|kraken|ETH|USD"')  # quoted: it holds a |
    assert json.loads(format_message(trade, "json")) == trade


def test_missed_sequence_numbers_are_counted_and_a_restart_is_not_a_gap() -> None:
    view = TapView()
    frames = _frames(_trades(10))
    view.feed(_block(frames[:3]))
    view.feed(_block(frames[7:]))  # 4..7 never arrived
    view.feed(_block(_frames(_trades(2), epoch=6)))  # the producer restarted: counters start again
    view.feed(_block(_frames(_trades(1), first=3, epoch=6)))  # and its 3rd
    summary = view.summary()
    assert (summary.shown, summary.missed, summary.restarts, summary.sources) == (9, 4, 1, 1)


def test_filtered_frames_and_control_frames_are_tracked_or_skipped_not_shown() -> None:
    view = TapView()
    block = _block(_frames([*_trades(2), *_trades(2, ETH)]))
    keep = np.array([True, False, True, False])
    control = protocol.encode_message(protocol.RelayDomain.SYSTEM, 1, 0, 1,
                                      protocol.encode(protocol.SequenceHead(source=SOURCE, sequence=99)))
    shown = view.feed(protocol.FrameBlock.from_bytes(control + block.with_placeholders(keep).tobytes()))
    assert [m["seq"] for m in shown] == [1, 3]
    view.feed(_block(_frames(_trades(1), first=5)))
    assert view.summary().missed == 0  # 2 and 4 came as placeholders


def test_a_limit_stops_within_a_block_and_types_not_asked_for_still_name_instruments() -> None:
    view = TapView(show=[protocol.TLVType.TRADE])
    done = protocol.SnapshotComplete(source=SOURCE, instrument_id=0, sequence=1)  # system: passes any filter
    shown = view.feed(_block(_frames([protocol.mapping_for(BTC), done, *_trades(5)])), limit=2)
    assert [m["seq"] for m in shown] == [3, 4] and view.shown == 2
    assert shown[0]["records"][0]["instrument"] == "coinbase:BTC-USD"


def test_a_frame_whose_tlvs_do_not_decode_is_counted_and_skipped() -> None:
    view = TapView()
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, SOURCE, make_sequence(5, 1))
    short = builder.build(bytes([int(protocol.TLVType.TRADE), 37]) + bytes(37), 1)  # a Trade one byte short
    shown = view.feed(_block([short, *_frames(_trades(1), first=2)]))
    assert [m["seq"] for m in shown] == [2] and view.summary().malformed == 1


# -- the command, against a real publisher -----------------------------------------------------------
TOPOLOGY = """\
topology: tp
nodes:
  src: {kind: source.counter, params: {rate: 1000}}
  bus: {kind: relay, domain: market_data, inputs: [src]}
  direct:
    kind: relay
    domain: market_data
    inputs: [{from: src, types: [Trade]}]
    params: {delivery: peer}
  sink: {kind: sink.counter, inputs: [bus]}
"""


@pytest.fixture
def applied(monkeypatch):
    """A run directory holding the plan ``apply`` would write for TOPOLOGY (no processes)."""
    base = Path(tempfile.mkdtemp(prefix="ap", dir="/tmp"))  # socket paths stay short
    monkeypatch.setenv("ALPHAPULSE_RUN_DIR", str(base))
    topo = base / "tp.yaml"
    topo.write_text(TOPOLOGY)
    run = RunBase(base)
    plan, _ = compile_file(topo, run)
    run.plan_file("tp").parent.mkdir(parents=True)
    run.plan_file("tp").write_text(json.dumps(plan))
    (base / "tp" / "s").mkdir()
    yield plan
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_a_sink_and_unknown_names_are_refused_with_what_to_tap_instead(applied, capsys) -> None:
    assert main(["tap", "tp/sink"]) == 2
    assert "tp/sink is a sink: it publishes nothing; tap what it reads: bus" in capsys.readouterr().err
    assert main(["tap", "tp/direct", "--types", "Quote"]) == 2  # the relay takes only Trade from src
    assert "tp/direct's filters and --types/--instruments together let nothing through" in capsys.readouterr().err
    assert main(["tap", "tp/nope"]) == 2 and "nodes: bus, direct, sink, src" in capsys.readouterr().err
    assert main(["tap", "tp/bus", "--types", "Trades"]) == 2 and "unknown TLV type 'Trades'" in capsys.readouterr().err
    assert main(["tap", "other/bus"]) == 2 and "topology other is not applied" in capsys.readouterr().err


def _tap(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alphapulse", "tap", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


async def _wait_for_subscriber(publisher, prefix: str) -> None:
    with trio.fail_after(60):  # a fresh interpreter imports the package first
        while not any(s.name.startswith(prefix) for s in publisher.statistics().subscribers):
            await trio.sleep(0.01)


async def test_the_tap_prints_what_the_node_publishes_through_its_filter(applied) -> None:
    plan = applied
    frames = _frames([protocol.mapping_for(BTC), protocol.mapping_for(ETH), *_trades(30), *_trades(30, ETH)])
    async with open_publisher(plan["nodes"]["src"]["sockets"]["data"], source_id=SOURCE) as publisher:
        tap = _tap("tp/src", "--types", "Trade", "--instruments", "kraken:ETH-USD", "--count", "30")
        await _wait_for_subscriber(publisher, "tap-")
        await publisher.publish(_block(frames))
        out, err = await trio.to_thread.run_sync(tap.communicate, None, 60)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [m["seq"] for m in lines] == list(range(33, 63))
    assert {r["instrument"] for m in lines for r in m["records"]} == {"kraken:ETH-USD"}  # named, mappings unshown
    assert tap.returncode == 0 and "tap tp/src: 30 messages shown from 1 source in" in err and "missed 0" in err


async def test_a_tap_that_cannot_keep_up_never_holds_the_node_back_and_counts_what_it_missed(applied) -> None:
    """Its stdout is a pipe nobody reads: the node's queue for the tap overflows, the node drops
    the oldest for the tap alone (drop_oldest) and publishing goes on; the tap's count of missed
    sequence numbers is exactly the node's count of frames dropped for it."""
    plan = applied
    total = 20_000
    frames = _frames(_trades(total))
    async with open_publisher(plan["nodes"]["src"]["sockets"]["data"], source_id=SOURCE,
                              socket_buffer=1 << 16) as publisher:
        tap = _tap("tp/src", "--queue", "100")
        await _wait_for_subscriber(publisher, "tap-")
        with trio.fail_after(30):  # the node is never held back: every publish returns
            for at in range(0, total, 100):
                await publisher.publish(_block(frames[at:at + 100]))
        (mine,) = [s for s in publisher.statistics().subscribers if s.name.startswith("tap-")]
        assert mine.overflow == "drop_oldest" and mine.dropped_overflow > 0
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(tap.stdout))  # now drain it
        reader.start()
        with trio.fail_after(30):  # until the node has sent it everything and the tap printed it all
            seen = -1
            while True:
                (mine,) = [s for s in publisher.statistics().subscribers if s.name.startswith("tap-")]
                if not mine.queued_messages and len(out) == seen:
                    break
                seen = len(out)
                await trio.sleep(0.5)
        tap.send_signal(signal.SIGINT)
        err = await trio.to_thread.run_sync(tap.stderr.read)
        await trio.to_thread.run_sync(tap.wait, 30)
        reader.join()
    shown = len(out)
    assert 0 < shown < total - 1000 and mine.dropped_overflow > 1000  # it did fall behind, by far
    assert f"tap tp/src: {shown:,} messages shown" in err and f"missed {mine.dropped_overflow:,}" in err, err
    assert shown + mine.dropped_overflow == total
    assert tap.returncode == 0


async def test_the_tap_follows_a_node_that_restarts(applied) -> None:
    path = applied["nodes"]["src"]["sockets"]["data"]
    async with open_publisher(path, source_id=SOURCE) as publisher:
        tap = _tap("tp/src", "--count", "20")
        await _wait_for_subscriber(publisher, "tap-")
        await publisher.publish(_block(_frames(_trades(10))))
        with trio.fail_after(10):
            while publisher.statistics().subscribers[0].queued_messages:
                await trio.sleep(0.01)
    async with open_publisher(path, source_id=SOURCE) as publisher:  # the restarted node: a new epoch
        await _wait_for_subscriber(publisher, "tap-")
        await publisher.publish(_block(_frames(_trades(10), epoch=6)))
        out, err = await trio.to_thread.run_sync(tap.communicate, None, 60)
    assert [(m["epoch"], m["seq"]) for m in map(json.loads, out.splitlines())] == [
        *((5, k) for k in range(1, 11)), *((6, k) for k in range(1, 11))]
    assert "closed the connection (restarting, or stopped); reconnecting" in err
    assert "20 messages shown from 1 source" in err and "missed 0; 1 producer restart" in err


async def test_a_corrupted_frame_is_skipped_and_counted_and_the_rest_shown(applied) -> None:
    """A peer that sends a frame whose checksum does not match (a stand-in for a broken node):
    the tap skips it, shows the frames around it and says how many it skipped."""
    path = applied["nodes"]["src"]["sockets"]["data"]
    good = _frames(_trades(3))
    bad = bytearray(good[1])
    bad[-1] ^= 0xFF  # the payload no longer matches the header's CRC
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen()
    with listener:
        tap = _tap("tp/src", "--count", "2")
        with trio.fail_after(60):
            conn, _ = await listener.accept()
        with conn:
            assert protocol.decode_message(await conn.recv(1024)).tlvs[0].subscriber.startswith("tap-")
            await conn.send(good[0] + bytes(bad) + good[2])
            out, err = await trio.to_thread.run_sync(tap.communicate, None, 60)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 3]
    assert "missed 1" in err and "1 bad frame skipped" in err, err


async def test_a_peer_relay_is_tapped_at_its_publishers_through_its_filter(applied) -> None:
    """A ``delivery: peer`` relay carries no data: the tap follows its publishers, as the relay's
    subscribers do, with the relay's filter on each input narrowed by the tap's own."""
    frames = _frames([protocol.mapping_for(BTC), *_trades(5)])
    async with open_publisher(applied["nodes"]["src"]["sockets"]["data"], source_id=SOURCE) as publisher:
        tap = _tap("tp/direct", "--count", "5")
        await _wait_for_subscriber(publisher, "tap-")
        await publisher.publish(_block(frames))
        out, err = await trio.to_thread.run_sync(tap.communicate, None, 60)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [m["seq"] for m in lines] == [2, 3, 4, 5, 6]  # the relay takes only Trade: the mapping is unshown
    assert lines[0]["records"][0]["instrument"] == "coinbase:BTC-USD"  # yet taken in, for the name
    assert "tap tp/direct: 5 messages shown from 1 source" in err and "missed 0" in err

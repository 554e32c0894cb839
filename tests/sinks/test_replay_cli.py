"""``alphapulse replay``: checking a recording, and playing one into a running node through a
temporary input attached over its control socket (real sockets, the real NodeHost)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import trio

from alphapulse import protocol
from alphapulse.cli import main
from alphapulse.runtime import ControlError, NodeHost, open_publisher, request_async
from tests.sinks import BTC, ETH, block_of, build, run_sink

START = 1_714_557_600 * 10**9
LIVE_SOURCE = 50


async def _record(directory: Path, frames: list[bytes]) -> None:
    async with run_sink("sink.recorder", {"path": str(directory), "rotate_bytes": 8192}) as run:
        await run.send(frames, per_block=100)
        await run.wait_received(len(frames))


def _recorded_frames(directory: Path) -> list[bytes]:
    decoder = protocol.FrameDecoder()
    for path in sorted(directory.glob("rec-*.frames")):
        decoder.receive_data(path.read_bytes())
    decoder.receive_data(b"")
    out = []
    while (block := decoder.next_block()) is not protocol.NEED_DATA:
        out.extend(bytes(f) for f in block.frames())
    return out


def _frames(n: int = 500) -> list[bytes]:
    records = [protocol.mapping_for(BTC), protocol.mapping_for(ETH)]
    records += [protocol.Trade((BTC, ETH)[k % 2].id, 10**8 + k, k + 1, START + k) for k in range(n)]
    return build(records, ts=[START + k * 1_000_000 for k in range(len(records))])


async def test_check_summarises_a_clean_recording(tmp_path: Path, capsys):
    frames = _frames()
    await _record(tmp_path / "rec", frames)
    code = await trio.to_thread.run_sync(main, ["replay", str(tmp_path / "rec"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["frames"] == len(frames) and summary["errors"] == {}
    assert summary["types"] == {"TRADE": 500, "INSTRUMENT_MAPPING": 2}
    ((key, source),) = summary["sources"].items()
    assert key.startswith("3/") and source == {"frames": 502, "first": 1, "last": 502, "missing": 0}
    assert sorted(summary["instruments"].values()) == [BTC.canonical, ETH.canonical]
    assert summary["files"] > 1


async def test_messages_print_as_json_lines_through_a_filter_and_name_holes_in_the_recording(tmp_path: Path, capsys):
    frames = _frames(300)
    await _record(tmp_path / "rec", frames[:100] + frames[110:])  # ten trades never reached the recorder
    code = await trio.to_thread.run_sync(
        main, ["replay", str(tmp_path / "rec"), "--messages", "--types", "Trade", "--instruments", "kraken:ETH-USD"])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    eth = [k for k in range(300) if k % 2 and not 98 <= k < 108]  # message k+3 is trade k
    assert code == 0 and [m["seq"] for m in lines] == [k + 3 for k in eth]
    assert {(r["type"], r["instrument"]) for m in lines for r in m["records"]} == {("Trade", "kraken:ETH-USD")}
    assert lines[0]["records"][0]["price"] == "1.00000001" and lines[0]["time"].startswith("2024-05-01T10:00:00.0")
    assert f"{len(eth)} messages shown from 1 source; 10 missing in their sequences" in captured.err
    assert await trio.to_thread.run_sync(main, ["replay", str(tmp_path / "rec"), "--messages", "--types", "Trad"]) == 2
    capsys.readouterr()
    assert await trio.to_thread.run_sync(
        main, ["replay", str(tmp_path / "rec"), "--messages", "--types", "Trade", "--format", "logfmt"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("time=2024-05-01T10:00:00.002000000Z source=3 seq=3 | type=Trade "
                            "instrument=coinbase:BTC-USD price=1 quantity=0.00000001")


async def test_check_reports_damage(tmp_path: Path, capsys):
    frames = _frames(50)
    damaged = bytearray(b"".join(frames))
    damaged[sum(map(len, frames[:3])) + 50] ^= 0xFF  # in the fourth frame's payload: its CRC no longer matches
    path = tmp_path / "one.frames"
    path.write_bytes(bytes(damaged) + frames[0][:20])
    code = await trio.to_thread.run_sync(main, ["replay", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "bad_checksum 1" in out and "truncated 1" in out
    assert f"{len(frames) - 1} frames" in out


@pytest.fixture
def applied(tmp_path: Path):
    """A run base with an applied plan whose node ``rec`` (a recorder) takes a live input."""
    with tempfile.TemporaryDirectory(prefix="apr", dir="/tmp") as run_dir:
        base = tmp_path / "run"
        sockets = {"data": f"{run_dir}/s/rec.sock", "control": f"{run_dir}/c/rec.sock"}
        plan = {"format": 1, "topology": "topo", "run_dir": run_dir, "nodes": {
            "rec": {"kind": "sink.recorder", "role": "sink", "source_id": 9, "sockets": sockets,
                    "params": {"path": str(tmp_path / "out"), "fsync_seconds": 0.1},
                    "inputs": [{"node": "live", "socket": f"{run_dir}/s/live.sock", "overflow": "block"}]},
            "live": {"kind": "source.counter", "role": "source", "source_id": 50, "inputs": [],
                     "sockets": {"data": f"{run_dir}/s/live.sock", "control": f"{run_dir}/c/live.sock"}},
        }}
        (base / "topo").mkdir(parents=True)
        (base / "topo" / "plan.json").write_text(json.dumps(plan))
        yield base, plan


async def test_into_plays_the_recording_bit_for_bit_beside_the_live_input(tmp_path: Path, applied, capsys):
    base, plan = applied
    frames = _frames(2000)
    await _record(tmp_path / "rec", frames)
    live = build([protocol.Trade(BTC.id, 7 * 10**8, 1, START)] * 300, ts=START, source=LIVE_SOURCE)
    run_dir = plan["run_dir"]
    async with open_publisher(f"{run_dir}/s/live.sock", source_id=LIVE_SOURCE) as publisher:
        host = NodeHost(plan, "rec")
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            with trio.fail_after(10):
                while not any(s.name == "rec" for s in publisher.statistics().subscribers):
                    await trio.sleep(0.005)

            async def live_stream() -> None:
                for k in range(0, len(live), 10):
                    await publisher.publish(block_of(live[k : k + 10]))
                    await trio.sleep(0.002)

            nursery.start_soon(live_stream)
            code = await trio.to_thread.run_sync(main, ["replay", str(tmp_path / "rec"), "--into", "topo/rec",
                                                        "--run-dir", str(base), "--json"])
            result = json.loads(capsys.readouterr().out)
            assert code == 0, result
            assert result == {"sent": len(frames), "delivered": len(frames), "duplicates": 0, "messages_lost": 0,
                              "decode_errors": {}}
            assert [link.spec.node for link in host.links] == ["live"]  # detached again
            with trio.fail_after(10):
                while host.received < len(frames) + len(live):
                    await trio.sleep(0.01)
            assert not os.path.exists(f"{run_dir}/s/replay-{os.getpid()}.sock")
            host.stop()
    out = _recorded_frames(tmp_path / "out")
    assert [f for f in out if int.from_bytes(f[6:8], "little") != LIVE_SOURCE] == frames
    assert [f for f in out if int.from_bytes(f[6:8], "little") == LIVE_SOURCE] == live


async def test_into_refuses_what_it_cannot_play_into(tmp_path: Path, applied, capsys):
    base, _ = applied
    path = tmp_path / "one.frames"
    path.write_bytes(b"".join(_frames(3)))
    argv = ["replay", str(path), "--run-dir", str(base), "--timeout", "2", "--into"]
    assert await trio.to_thread.run_sync(main, [*argv, "nope/rec"]) == 2
    assert await trio.to_thread.run_sync(main, [*argv, "topo/nope"]) == 2
    assert await trio.to_thread.run_sync(main, [*argv, "topo/live"]) == 2
    assert await trio.to_thread.run_sync(main, [*argv, "topo"]) == 2
    assert await trio.to_thread.run_sync(main, [*argv, "topo/rec"]) == 3  # applied but not running
    err = capsys.readouterr().err
    assert "not applied" in err and "no node 'nope'" in err and "no inputs" in err and "cannot play" in err
    assert await trio.to_thread.run_sync(main, ["replay", str(tmp_path / "missing")]) == 2


async def test_attach_input_refusals_never_take_the_node_down(applied):
    _, plan = applied
    control = plan["nodes"]["rec"]["sockets"]["control"]
    host = NodeHost(plan, "rec")
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        refusals = [
            {"name": "live", "socket": "/tmp/x.sock"},  # the plan's own input
            {"name": "t", "socket": "/tmp/x.sock", "overflow": "sometimes"},
            {"name": "t"},
        ]
        for request in refusals:
            with pytest.raises(ControlError):
                await request_async(control, "attach_input", **request)
        with pytest.raises(ControlError, match="no temporary input"):
            await request_async(control, "detach_input", name="t")
        await request_async(control, "attach_input", name="t", socket="/etc/passwd/not-a-dir.sock")
        with trio.fail_after(10):
            while host.ctx.counters["errors.attached_input"] < 1:  # ENOTDIR is not retried: counted
                await trio.sleep(0.01)
        assert [link.spec.node for link in host.links] == ["live"]
        assert (await request_async(control, "health"))["status"] == "healthy"
        host.stop()


def test_paced_parts_keep_the_recorded_gaps():
    from alphapulse.cli.replay import _paced

    stamps = [START + k * 5_000_000 for k in range(10)]  # every 5 ms
    frames = build([protocol.Trade(BTC.id, 10**8, 1, t) for t in stamps], ts=stamps)
    parts = list(_paced(block_of(frames), 100.0, START, 0.25))  # quarter speed: every 20 ms
    assert [when for when, _ in parts] == pytest.approx([100.0 + k * 0.02 for k in range(10)])
    assert [bytes(f) for _, part in parts for f in part.frames()] == frames
    ((_, whole),) = _paced(block_of(frames), 0.0, START, 1000.0)  # all due within one window
    assert len(whole) == 10

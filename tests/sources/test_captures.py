"""Capture reading (both formats) and the replay servers of alphapulse.testing, over real sockets."""

from __future__ import annotations

import functools
import io
import logging

import httpx
import orjson
import pytest
import trio
import zstandard
from trio_websocket import ConnectionClosed, open_websocket_url

from alphapulse.captures import (
    CaptureFormatError,
    CaptureRecord,
    CaptureStatistics,
    capture_format,
    capture_header,
    http_responses,
    parse_jsonl_row,
    parse_line,
    read_capture,
    received_frames,
    sent_messages,
)
from alphapulse.testing import (
    CannedResponse,
    ReplayFaults,
    ReplayResponder,
    routes_from_capture,
    serve_capture,
    serve_http,
)

# -- parsing -------------------------------------------------------------------------------------


def test_parse_line_forms():
    assert parse_line("wss://ws.kraken.com <-> 1618678132.368463\n") == CaptureRecord(
        "connect", 1618678132.368463, "", "wss://ws.kraken.com"
    )
    sent = parse_line('wss://ws.kraken.com <- 1.5: {"event":"subscribe"}')
    assert sent == CaptureRecord("send", 1.5, '{"event":"subscribe"}', "wss://ws.kraken.com")
    # received frames split on the FIRST ": " only; the frame keeps every later one
    got = parse_line('1618678133.29: {"a": "b: c", "d": 1}', "wss://x")
    assert got == CaptureRecord("recv", 1618678133.29, '{"a": "b: c", "d": 1}', "wss://x")
    http = parse_line('https://api.binance.com/api/v3/depth?symbol=X&limit=1000 -> 2.0: {"lastUpdateId":1}')
    assert http == CaptureRecord(
        "http", 2.0, '{"lastUpdateId":1}', "https://api.binance.com/api/v3/depth?symbol=X&limit=1000"
    )
    assert parse_line("   \n") is None
    assert parse_line('configuration: {"ticker": []}') is None


@pytest.mark.parametrize(
    "line",
    ["garbage", "12x: {}", "1618678133.29 no separator", "wss://h <? 1.0: {}", "wss://h <- 1.0 {}", "wss://h <-> x"],
)
def test_parse_line_rejects(line):
    with pytest.raises(CaptureFormatError):
        parse_line(line)


def test_parse_jsonl_rows():
    assert parse_jsonl_row({"t": "header", "format": 2}) is None
    rec = parse_jsonl_row(b'{"t":"recv","conn":"c.ws.2","ts":1.25,"data":"{\\"x\\":1}"}')
    assert rec == CaptureRecord("recv", 1.25, '{"x":1}', None, "c.ws.2")
    assert parse_jsonl_row({"t": "connect", "conn": "c", "ts": 1, "addr": "wss://a"}).url == "wss://a"
    assert parse_jsonl_row({"t": "http", "ts": 1, "url": "https://u", "data": "{}"}).kind == "http"
    for bad in ({"t": "recv", "ts": 1}, {"t": "nope", "ts": 1}, {"t": "recv", "ts": "x", "data": ""}, [1], b"{oops"):
        with pytest.raises(CaptureFormatError):
            parse_jsonl_row(bad)


def test_bad_lines_are_counted_and_skipped(tmp_path, caplog):
    path = tmp_path / "X.ws.1.0"
    path.write_bytes(
        b"wss://example.test <-> 1.0\n"
        b'1.1: {"ok": 1}\n'
        b"this is not a capture line\n"
        b"\xff\xfe invalid utf-8\n"
        b"\n"
        b'1.2: {"ok": 2}\n'
    )
    stats = CaptureStatistics()
    with caplog.at_level(logging.WARNING, "alphapulse.captures"):
        records = list(read_capture(path, stats=stats))
    assert [r.kind for r in records] == ["connect", "recv", "recv"]
    assert all(r.url == "wss://example.test" for r in records)
    assert stats.bad_lines == 2 and stats.bad_line_numbers == [3, 4] and stats.blank == 1
    assert stats.by_kind == {"connect": 1, "recv": 2}
    assert "X.ws.1.0:3" in caplog.text and "X.ws.1.0:4" in caplog.text


def test_many_bad_lines_summarised(tmp_path, caplog):
    path = tmp_path / "bad"
    path.write_text("nope\n" * 50 + "1.0: {}\n")
    with caplog.at_level(logging.WARNING, "alphapulse.captures"):
        assert [r.text for r in read_capture(path)] == ["{}"]
    assert len(caplog.records) == 6 and "50 unreadable lines" in caplog.records[-1].getMessage()


def test_zstd_jsonl_written_here(tmp_path):
    rows = [
        {"t": "header", "format": 2, "exchange": "TEST"},
        {"t": "connect", "conn": "T.ws.1", "ts": 1.0, "addr": "wss://t"},
        {"t": "send", "conn": "T.ws.1", "ts": 1.1, "addr": "wss://t", "data": '{"type":"subscribe"}'},
        {"t": "recv", "conn": "T.ws.1", "ts": 1.2, "data": '{"n": 1}'},
    ]
    text = b"\n".join(orjson.dumps(r) for r in rows) + b"\n{broken\n" + orjson.dumps(rows[3]) + b"\n"
    path = tmp_path / "T.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(text))
    assert capture_format(path) == "jsonl.zst"
    assert capture_header(path)["exchange"] == "TEST"
    stats = CaptureStatistics()
    assert [r.kind for r in read_capture(path, stats=stats)] == ["connect", "send", "recv", "recv"]
    assert stats.bad_lines == 1 and stats.metadata == 1
    assert list(received_frames(path)) == ['{"n": 1}', '{"n": 1}']


def test_reading_is_lazy(tmp_path):
    path = tmp_path / "big"
    with open(path, "w") as f:
        for i in range(10000):
            f.write(f'{i}.0: {{"i": {i}}}\n')
    it = read_capture(path)
    assert next(it).text == '{"i": 0}'
    it.close()  # the file is closed with the generator


# -- the real captures -----------------------------------------------------------------------


def test_real_line_captures(shared_data):
    kraken = shared_data / "kraken" / "KRAKEN.ws.50.0"
    stats = CaptureStatistics()
    records = list(read_capture(kraken, stats=stats))
    assert stats.bad_lines == 0 and stats.by_kind == {"connect": 1, "send": 1, "recv": 2208}
    assert all(r.url == "wss://ws.kraken.com" for r in records)
    assert records[0].kind == "connect" and records[1].kind == "send"
    assert [orjson.loads(m.text)["subscription"] for m in sent_messages(kraken)] == [{"name": "book", "depth": 1000}]
    frames = list(received_frames(kraken))
    assert all(orjson.loads(f) is not None for f in frames)  # every frame is the exchange's JSON, intact

    binance_ws = shared_data / "binance" / "BINANCE.ws.1.0"
    recs = list(read_capture(binance_ws))
    assert recs[0].kind == "connect" and recs[0].url.startswith("wss://stream.binance.com:9443/stream?streams=")
    assert sum(1 for r in recs if r.kind == "recv") == 265

    depth = list(http_responses(shared_data / "binance" / "BINANCE.http.0.0"))
    assert [r.url.split("symbol=")[1].split("&")[0] for r in depth] == ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
    assert all("lastUpdateId" in orjson.loads(r.text) for r in depth)

    info = shared_data / "kraken" / "KRAKEN.0"
    (pairs,) = list(http_responses(info))
    assert "XXBTZUSD" in orjson.loads(pairs.text)["result"]
    assert "book" not in capture_header(info)["config"]


def test_real_coinbase_advanced_capture(shared_data):
    path = shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"
    assert capture_format(path) == "jsonl.zst"
    assert capture_header(path)["exchange"] == "COINBASE"
    stats = CaptureStatistics()
    kinds = [r.kind for r in read_capture(path, stats=stats)]
    assert stats.bad_lines == 0 and kinds.count("recv") == 1030 and kinds.count("send") == 5
    sequence = [orjson.loads(f)["sequence_num"] for f in received_frames(path)]
    assert sequence == list(range(1030))


# -- the WebSocket replay server ---------------------------------------------------------------

FRAMES = [f'{{"n": {i}}}' for i in range(10)]


async def _collect(url: str, *, send: list[str] = (), count: int, timeout: float = 5.0) -> list[str]:
    got: list[str] = []
    async with open_websocket_url(url) as ws:
        for message in send:
            await ws.send_message(message)
        with trio.fail_after(timeout):
            while len(got) < count:
                got.append(await ws.get_message())
    return got


async def test_serves_capture_after_subscribe(nursery, shared_data):
    path = shared_data / "kraken" / "KRAKEN.ws.48.0"
    server = await nursery.start(functools.partial(serve_capture, path, wait_for_messages=1))
    got = await _collect(server.url, send=['{"event":"subscribe"}'], count=49)
    assert got == list(received_frames(path))
    assert server.received[0] == ['{"event":"subscribe"}']
    assert server.frames_sent == 49 and server.finished.is_set()


async def test_waits_for_subscribe(nursery):
    server = await nursery.start(functools.partial(serve_capture, FRAMES, wait_for_messages=2))
    async with open_websocket_url(server.url) as ws:
        await ws.send_message("one")
        with trio.move_on_after(0.2):
            await ws.get_message()
            pytest.fail("sent before the second subscribe message")
        await ws.send_message("two")
        assert await ws.get_message() == FRAMES[0]


async def test_faults(nursery):
    faults = ReplayFaults(drop={1}, duplicate={3}, corrupt={5: lambda f: f.replace("5", "55")}, garbage={7: "not json"})
    server = await nursery.start(functools.partial(serve_capture, FRAMES, faults=faults))
    got = await _collect(server.url, count=11)
    expected = [FRAMES[0], FRAMES[2], FRAMES[3], FRAMES[3], FRAMES[4], '{"n": 55}', FRAMES[6], "not json"]
    assert got == [*expected, *FRAMES[7:]]
    assert server.fired == {("drop", 1), ("duplicate", 3), ("corrupt", 5), ("garbage", 7)}


@pytest.mark.parametrize("mode", ["close", "abort"])
async def test_cut_and_continue(nursery, mode):
    faults = ReplayFaults(cut_after={3}, resume="continue", cut_mode=mode)
    server = await nursery.start(functools.partial(serve_capture, FRAMES, faults=faults))
    first: list[str] = []
    with pytest.raises(ConnectionClosed):
        async with open_websocket_url(server.url) as ws:
            with trio.fail_after(5):
                while True:
                    first.append(await ws.get_message())
    assert first == FRAMES[:4] and server.cuts == 1
    assert await _collect(server.url, count=6) == FRAMES[4:]
    assert server.connections == 2


async def test_cut_and_restart(nursery):
    faults = ReplayFaults(cut_after={4}, drop={2}, resume="restart")
    server = await nursery.start(functools.partial(serve_capture, FRAMES, faults=faults))
    with pytest.raises(ConnectionClosed):
        await _collect(server.url, count=100)
    # the second pass starts over and is clean: faults fire once
    assert await _collect(server.url, count=10) == FRAMES


async def test_close_at_end(nursery):
    server = await nursery.start(functools.partial(serve_capture, FRAMES[:3], at_end="close"))
    got = []
    async with open_websocket_url(server.url) as ws:
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(await ws.get_message())
    assert got == FRAMES[:3]


async def test_recorded_speed():
    frames = [(100.0 + 0.1 * i, f"f{i}") for i in range(6)]  # 0.5 s recorded
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_capture, frames, speed=5.0))
        start = trio.current_time()
        assert await _collect(server.url, count=6) == [f for _, f in frames]
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert 0.09 <= elapsed < 1.0  # 0.5 s at 5x = 0.1 s


class _Echo(ReplayResponder):
    def __init__(self):
        self.advanced = []
        self.starts = []

    def connection_started(self, start):
        self.starts.append(start)

    def advance(self, index, frame):
        self.advanced.append(index)

    def received(self, message):
        return [f"re:{message}"]


async def test_responder_answers_between_frames(nursery):
    responder = _Echo()
    frames = [(float(i) * 0.05, f"f{i}") for i in range(10)]
    server = await nursery.start(functools.partial(serve_capture, frames, responder=responder, speed=1.0))
    got = []
    async with open_websocket_url(server.url) as ws:
        got.append(await ws.get_message())
        await ws.send_message("resub")
        with trio.fail_after(5):
            while len(got) < 11:
                got.append(await ws.get_message())
    assert "re:resub" in got and [g for g in got if g != "re:resub"] == [f for _, f in frames]
    assert responder.starts == [0] and responder.advanced == list(range(10))
    # answers keep coming after the capture ends (the connection is held)
    assert server.finished.is_set()


async def test_responder_sees_dropped_frames(nursery):
    responder = _Echo()
    server = await nursery.start(
        functools.partial(serve_capture, FRAMES, responder=responder, faults=ReplayFaults(drop={0, 9}))
    )
    assert await _collect(server.url, count=8) == FRAMES[1:9]
    await server.finished.wait()
    assert responder.advanced == list(range(10))


# -- the HTTP server ---------------------------------------------------------------------------


async def test_http_serves_binance_snapshots(nursery, shared_data):
    path = shared_data / "binance" / "BINANCE.http.0.0"
    routes = routes_from_capture(path)
    assert sorted(routes) == sorted(
        f"/api/v3/depth?symbol={s}&limit=1000" for s in ("NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR")
    )
    server = await nursery.start(serve_http, routes)
    bodies = {r.url.split("symbol=")[1].split("&")[0]: r.text for r in http_responses(path)}
    async with httpx.AsyncClient(base_url=server.url) as client:
        for symbol, body in bodies.items():
            response = await client.get("/api/v3/depth", params={"symbol": symbol, "limit": 1000})
            assert response.status_code == 200 and response.text == body
        # query items in another order or extra ones still match; unknown symbols are 404
        response = await client.get("/api/v3/depth?limit=1000&symbol=LRCBTC&x=1")
        assert response.text == bodies["LRCBTC"]
        missing = await client.get("/api/v3/depth", params={"symbol": "NOPE", "limit": 1000})
        assert missing.status_code == 404
    assert server.requests[0] == "/api/v3/depth?symbol=NKNUSDT&limit=1000"
    assert server.count("/api/v3/depth") == 6 and server.not_found == 1


async def test_http_canned_status_delay_and_callable(nursery):
    calls = []

    def dynamic(target):
        calls.append(target)
        return CannedResponse(f'{{"n": {len(calls)}}}')

    routes = {"/slow": CannedResponse("{}", delay=0.2), "/down": CannedResponse("busy", status=503), "/n": dynamic}
    server = await nursery.start(serve_http, routes)
    async with httpx.AsyncClient(base_url=server.url) as client:
        start = trio.current_time()
        assert (await client.get("/slow")).text == "{}"
        assert trio.current_time() - start >= 0.2
        assert (await client.get("/down")).status_code == 503
        assert (await client.get("/n")).json() == {"n": 1}
        assert (await client.get("/n")).json() == {"n": 2}
    assert server.requests == ["/slow", "/down", "/n", "/n"]


def test_stream_reader_is_text_safe():
    # guard for the zstd path: a line split across decompressor chunks must come back whole
    data = b"".join(b'{"t":"recv","ts":1,"data":"%s"}\n' % (b"x" * 70000) for _ in range(3))
    buf = io.BytesIO(zstandard.ZstdCompressor().compress(data))
    reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(buf))
    assert [len(parse_jsonl_row(line).text) for line in reader] == [70000] * 3


async def test_extra_frames_follow_their_index(nursery):
    server = await nursery.start(functools.partial(serve_capture, FRAMES[:4], extra_frames={1: ["x", "y"]}))
    assert await _collect(server.url, count=6) == [FRAMES[0], FRAMES[1], "x", "y", FRAMES[2], FRAMES[3]]

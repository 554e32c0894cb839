"""The adapters' WebSocket client over real TCP: trio-websocket servers for the usual behaviour,
a wsproto server writing exact bytes where the test needs frames to arrive in one read."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trio_websocket
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from alphapulse.runtime._wsclient import ConnectionClosed, HandshakeFailed, WebSocketClient, open_websocket

RawScript = Callable[[trio.SocketStream, WSConnection], Awaitable[None]]


async def serve_raw(script: RawScript, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A WebSocket server on 127.0.0.1 that accepts the upgrade and then runs ``script``."""

    async def handle(stream: trio.SocketStream) -> None:
        protocol = WSConnection(ConnectionType.SERVER)
        while True:
            protocol.receive_data(await stream.receive_some(65536))
            if any(isinstance(event, Request) for event in protocol.events()):
                break
        upgrade = protocol.send(AcceptConnection())
        await script(stream, protocol, upgrade)

    await trio.serve_tcp(handle, 0, host="127.0.0.1", task_status=task_status)


async def raw_server(nursery: trio.Nursery, script) -> str:
    listeners = await nursery.start(serve_raw, script)
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/feed?x=1"


async def trio_websocket_server(nursery: trio.Nursery, handler) -> str:
    server = await nursery.start(functools.partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                                   ssl_context=None))
    return f"ws://127.0.0.1:{server.port}/"


async def received_events(stream: trio.SocketStream, protocol: WSConnection, count: int) -> list:
    events: list = []
    while len(events) < count:
        data = await stream.receive_some(65536)
        if not data:
            break
        protocol.receive_data(data)
        events.extend(protocol.events())
    return events


async def test_frames_written_at_once_come_out_as_one_batch_in_order():
    messages = [f'{{"type":"match","trade_id":{i}}}' for i in range(30)]

    async def script(stream, protocol, upgrade):
        # the upgrade and every frame in one write: one read on the client's side
        await stream.send_all(upgrade + b"".join(protocol.send(TextMessage(data=m)) for m in messages))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        async with open_websocket(url) as ws:
            assert await ws.receive_batch() == messages
            with trio.move_on_after(0.2) as waited:
                await ws.receive_batch()
            assert waited.cancelled_caught  # nothing more: the batch held them all
        nursery.cancel_scope.cancel()


async def test_fragments_are_joined_and_a_ping_between_them_is_answered():
    async def script(stream, protocol, upgrade):
        await stream.send_all(upgrade)
        for event in (TextMessage(data="hel", message_finished=False), Ping(payload=b"are you there"),
                      TextMessage(data="lo", message_finished=True),
                      BytesMessage(data=b"\x00\x01", message_finished=False), BytesMessage(data=b"\x02")):
            await stream.send_all(protocol.send(event))
            await trio.sleep(0.01)
        pongs.extend(e for e in await received_events(stream, protocol, 1) if isinstance(e, Pong))
        await trio.sleep_forever()

    pongs: list = []
    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        async with open_websocket(url) as ws:
            assert await ws.get_message() == "hello"
            assert await ws.get_message() == b"\x00\x01\x02"
            await ws.send_message("sync")  # lets the server read on
            with trio.fail_after(5):
                while not pongs:
                    await trio.sleep(0.01)
        assert bytes(pongs[0].payload) == b"are you there"
        nursery.cancel_scope.cancel()


async def test_a_message_over_the_limit_closes_with_1009():
    closes: list[CloseConnection] = []

    async def script(stream, protocol, upgrade):
        await stream.send_all(upgrade + protocol.send(TextMessage(data="x" * 200)))
        closes.extend(e for e in await received_events(stream, protocol, 1) if isinstance(e, CloseConnection))

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        async with open_websocket(url, max_message_size=100) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.receive_batch()
        assert closed.value.code == 1009
        assert closes and closes[0].code == 1009
        nursery.cancel_scope.cancel()


async def test_messages_before_the_servers_close_frame_come_first():
    async def handler(request):
        ws = await request.accept()
        for i in range(3):
            await ws.send_message(f"m{i}")
        await ws.aclose(code=4001, reason="bye")

    async with trio.open_nursery() as nursery:
        url = await trio_websocket_server(nursery, handler)
        async with open_websocket(url) as ws:
            got: list = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    got += await ws.receive_batch()
            assert got == ["m0", "m1", "m2"]
            assert (closed.value.code, closed.value.reason) == (4001, "bye")
            with pytest.raises(ConnectionClosed):  # and stays closed
                await ws.send_message("late")
        nursery.cancel_scope.cancel()


async def test_a_tcp_close_without_a_close_frame_is_1006():
    async def script(stream, protocol, upgrade):
        await stream.send_all(upgrade + protocol.send(TextMessage(data="last")))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        url = await raw_server(nursery, script)
        async with open_websocket(url) as ws:
            assert await ws.receive_batch() == ["last"]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.receive_batch()
        assert closed.value.code == 1006
        nursery.cancel_scope.cancel()


async def test_a_refused_upgrade_names_the_status():
    async def handler(request):
        await request.reject(403, body=b"no key")

    async with trio.open_nursery() as nursery:
        url = await trio_websocket_server(nursery, handler)
        with pytest.raises(HandshakeFailed, match="HTTP 403"):
            async with open_websocket(url):
                pass
        nursery.cancel_scope.cancel()


async def test_a_server_that_never_upgrades_times_out():
    async def silent(stream):
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(5), pytest.raises(HandshakeFailed, match=r"within 0\.2 s"):
            async with open_websocket(f"ws://127.0.0.1:{port}/", connect_timeout=0.2):
                pass
        nursery.cancel_scope.cancel()


async def test_a_refused_connection_is_an_oserror():
    with trio.socket.socket() as probe:  # a port nobody listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        async with open_websocket(f"ws://127.0.0.1:{port}/"):
            pass


async def test_the_client_closes_with_its_code_and_reason_and_the_server_sees_them():
    seen: list = []

    async def handler(request):
        ws = await request.accept()
        got = await ws.get_message()
        try:
            await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            seen.append((got, exc.reason.code, exc.reason.reason))

    async with trio.open_nursery() as nursery:
        url = await trio_websocket_server(nursery, handler)
        async with open_websocket(url) as ws:
            await ws.send_message("subscribe")
            await ws.aclose(code=1000, reason="resync")
            assert ws.closed is not None and ws.closed.code == 1000
            with pytest.raises(ConnectionClosed):
                await ws.receive_batch()
        with trio.fail_after(5):
            while not seen:
                await trio.sleep(0.01)
        assert seen == [("subscribe", 1000, "resync")]
        nursery.cancel_scope.cancel()


async def test_wss_verifies_the_servers_certificate_and_its_name():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def handler(request):
        ws = await request.accept()
        await ws.send_message("over tls")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0,
                                                       ssl_context=server_context))
        async with open_websocket(f"wss://localhost:{server.port}/", ssl_context=trusting) as ws:
            assert await ws.receive_batch() == ["over tls"]
        with pytest.raises(HandshakeFailed, match="certificate verify failed"):  # the system's trust store
            async with open_websocket(f"wss://localhost:{server.port}/"):  # knows nothing of this CA
                pass
        with pytest.raises(HandshakeFailed, match="IP address mismatch"):  # a certificate for another name
            async with open_websocket(f"wss://127.0.0.1:{server.port}/", ssl_context=trusting):
                pass
        nursery.cancel_scope.cancel()


def test_only_websocket_urls():
    async def main():
        async with open_websocket("http://127.0.0.1/"):
            pass

    with pytest.raises(ValueError, match="not a WebSocket URL"):
        trio.run(main)


_payloads = st.one_of(st.text(max_size=300), st.binary(max_size=300))


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.tuples(_payloads, st.integers(1, 4)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(1, 97), max_size=30))
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_cut(messages, cuts):
    """Each message, text or binary, sent in up to 4 fragments; the byte stream cut into reads at
    arbitrary points (trio's lockstep stream: each write is one read, wherever it cuts a frame).
    Whatever the cuts, the batches hold exactly the messages, whole, in order."""

    async def main() -> list:
        server_stream, client_stream = trio.testing.lockstep_stream_pair()
        client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
        server.receive_data(client.send(Request(host="venue", target="/")))
        assert any(isinstance(event, Request) for event in server.events())
        client.receive_data(server.send(AcceptConnection()))
        assert any(isinstance(event, AcceptConnection) for event in client.events())
        ws = WebSocketClient(client_stream, client, max_message_size=1 << 20)
        wire = b""
        for payload, pieces in messages:
            kind = TextMessage if isinstance(payload, str) else BytesMessage
            step = max(1, -(-len(payload) // pieces))
            parts = [payload[i:i + step] for i in range(0, len(payload), step)] or [payload]
            for k, part in enumerate(parts):
                wire += server.send(kind(data=part, message_finished=k == len(parts) - 1))

        async def write() -> None:
            at = 0
            for cut in cuts:
                if at < len(wire):
                    await server_stream.send_all(wire[at:at + cut])
                    at += cut
            if at < len(wire):
                await server_stream.send_all(wire[at:])

        got: list = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            while len(got) < len(messages):
                got += await ws.receive_batch()
        return got

    assert trio.run(main) == [payload for payload, _ in messages]

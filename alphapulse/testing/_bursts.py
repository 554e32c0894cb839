"""A capture server that writes many frames per TCP write, as an exchange's bursts arrive.

:func:`serve_capture` sends each frame with its own trio-websocket ``send_message``: in one
trio run with the adapter, the adapter reads each frame on its own. A live venue's frames come
many to a segment (41% of the Coinbase capture's frames follow the one before within 100 µs),
so a client reads several per ``recv``. This server speaks WebSocket with wsproto and writes
``per_write`` frames at a time (or, at a recorded pace, every frame due by each wake-up), so an
adapter's read path meets bursts in tests and benchmarks too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from alphapulse.testing._replay import load_frames


@dataclasses.dataclass
class BurstServer:
    """What ``nursery.start(serve_bursts, ...)`` returns."""

    port: int
    writes: int = 0
    """TCP writes of frames, over every connection."""
    frames_sent: int = 0
    received: list[list[str]] = dataclasses.field(default_factory=list)
    """Every client text message, one list per connection."""
    streaming: trio.Event = dataclasses.field(default_factory=trio.Event)
    """Set when a connection starts on its frames (its subscribe messages are in)."""
    finished: trio.Event = dataclasses.field(default_factory=trio.Event)
    """Set when a connection has written the last frame."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


async def serve_bursts(
    source: str | os.PathLike[str] | Iterable[str | tuple[float, str]],
    *,
    per_write: int = 50,
    speed: float = 0.0,
    wait_for_messages: int = 0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``source``'s received frames on ``ws://127.0.0.1:PORT/`` until cancelled: per
    connection, after ``wait_for_messages`` client messages, every frame in order, then hold the
    connection open (answering pings and a close). ``speed=0``: back to back, ``per_write`` to a
    write. ``speed > 0``: at the recorded pace divided by ``speed``, each write holding the frames
    due by then (at most ``per_write``): the capture's own bursts."""
    loaded = load_frames(source)
    frames = [text for _, text in loaded]
    offsets = [ts - loaded[0][0] for ts, _ in loaded] if loaded else []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = BurstServer(port=listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        protocol = WSConnection(ConnectionType.SERVER)
        received: list[str] = []
        server.received.append(received)

        async def read_until(done: Any) -> bool:
            while not done():
                data = await stream.receive_some(65536)
                if not data:
                    return False
                protocol.receive_data(data)
                for event in protocol.events():
                    if isinstance(event, Request):
                        await stream.send_all(protocol.send(AcceptConnection()))
                        accepted.set()
                    elif isinstance(event, TextMessage):
                        received.append(event.data)
                    elif isinstance(event, Ping):
                        await stream.send_all(protocol.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        await stream.send_all(protocol.send(event.response()))
                        return False
            return True

        accepted = trio.Event()
        if not await read_until(lambda: accepted.is_set() and len(received) >= wait_for_messages):
            return
        server.streaming.set()
        origin, start = trio.current_time(), 0
        while start < len(frames):
            end = min(len(frames), start + per_write)
            if speed > 0:
                await trio.sleep_until(origin + offsets[start] / speed)
                due = (trio.current_time() - origin) * speed
                end = next((i for i in range(start + 1, end) if offsets[i] > due), end)
            chunk = frames[start:end]
            await stream.send_all(b"".join(protocol.send(TextMessage(data=frame)) for frame in chunk))
            server.writes += 1
            server.frames_sent += len(chunk)
            start = end
        server.finished.set()
        await read_until(lambda: False)  # hold, like a live venue: silence until the client leaves

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, _quietly(handle), listeners)
        task_status.started(server)


def _quietly(handle: Any) -> Any:
    async def run(stream: trio.SocketStream) -> None:
        try:
            await handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-write: its reconnect is a new connection
        finally:
            await trio.aclose_forcefully(stream)

    return run

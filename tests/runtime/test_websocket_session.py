"""The shared upstream session loop (``run_websocket_session``) against a real WebSocket server
writing captured Coinbase frames many to a TCP write: when the session ends part-way through a
read's frames, the frames it did not hand to the adapter are counted as dropped, never lost
silently."""

from __future__ import annotations

import functools
import logging

import pytest
import trio

from alphapulse.runtime._breaker import BreakerSettings
from alphapulse.runtime._context import NodeContext
from alphapulse.runtime._input import Backoff
from alphapulse.runtime._websocket import SessionSettings, run_websocket_session
from alphapulse.testing import load_frames, serve_bursts

PER_WRITE = 40


def context() -> NodeContext:
    return NodeContext(name="feed", kind="source.test", source_id=7, relay_domain=1,
                       log=logging.getLogger("test.websocket_session"), breaker_settings=BreakerSettings())


@pytest.mark.parametrize("ending", ["adapter_closes", "send_fails"])
async def test_frames_a_session_did_not_handle_are_counted(shared_data, ending) -> None:
    """The adapter ends the session at the first frame of a 40-frame burst: a resync closes it,
    or the I/O that frame called for fails. The rest of the read is ``dropped.session_closed``,
    so the session's frames are all accounted: handled + dropped = received. The next session
    is unaffected and hands every frame over."""
    frames = load_frames(shared_data / "coinbase" / "COINBASE.ws.28.0")[:2 * PER_WRITE]
    ctx = context()
    handled: list[int] = [0]
    sessions: list[dict[str, int]] = []
    socket: list = []

    async def on_connect(ws) -> None:
        socket[:] = [ws]

    async def fail() -> None:
        raise OSError("send failed")

    def on_message(frame, receive_ns: int):
        handled[-1] += 1
        if len(sessions) == 0 and handled[-1] == 1:
            return socket[0].aclose(code=1000, reason="resync") if ending == "adapter_closes" else fail()
        return None

    def on_disconnect() -> None:
        sessions.append({"handled": handled[-1], "received": ctx.counters["upstream.frames"],
                         "dropped": ctx.counters["dropped.session_closed"]})
        handled.append(0)
        ctx.counters["upstream.frames"] = 0

    settings = SessionSettings(stale_after=0.5, connect_timeout=5.0, backoff=Backoff(initial=0.01, maximum=0.02))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve_bursts, frames, per_write=PER_WRITE))
            nursery.start_soon(functools.partial(run_websocket_session, ctx, server.url, on_connect=on_connect,
                                                 on_message=on_message, on_disconnect=on_disconnect,
                                                 settings=settings))
            while len(sessions) < 2:  # the second ends stale, after the server's last frame
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    first, second = sessions[:2]
    assert first["handled"] == 1
    assert first["received"] >= 2, "the first burst came in more than one read; nothing to drop"
    assert first["dropped"] == first["received"] - first["handled"]
    assert second == {"handled": len(frames), "received": len(frames), "dropped": first["dropped"]}
    assert ctx.counters["upstream.failures"] == 2  # the first ended by the close or the failed send, the second stale

"""``start_listening``: a server that cannot bind says where (real TCP sockets, real servers)."""

from __future__ import annotations

import errno
import functools
import socket

import pytest
import trio
from trio_websocket import serve_websocket

from alphapulse.runtime import start_listening
from alphapulse.runtime._failure import describe, leaves
from alphapulse.runtime._listen import address


def test_an_address_reads_as_a_person_would_type_it() -> None:
    assert address("127.0.0.1", 8766) == "127.0.0.1:8766"
    assert address("::1", 8766) == "[::1]:8766"


@pytest.fixture
def taken_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


async def _handler(request) -> None:
    await request.reject(404)


async def test_a_taken_port_names_the_address_and_what_wanted_it(taken_port) -> None:
    """trio-websocket raises from inside its own nursery; the errno stays, so callers that test
    for EADDRINUSE still can."""
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError) as raised:
            await start_listening(nursery, functools.partial(serve_websocket, _handler, "127.0.0.1", taken_port, None),
                                  "127.0.0.1", taken_port, "WebSocket bridge")
    assert raised.value.errno == errno.EADDRINUSE
    assert f"cannot listen on 127.0.0.1:{taken_port} (WebSocket bridge): Address already in use" in str(raised.value)
    # the node's last words name the line that asked for the port, not the helper's raise
    assert describe(raised.value).endswith(" in test_a_taken_port_names_the_address_and_what_wanted_it)")


async def test_a_free_port_serves_and_other_failures_pass_through_unchanged() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_listening(nursery, functools.partial(serve_websocket, _handler, "127.0.0.1", 0, None),
                                       "127.0.0.1", 0, "WebSocket bridge")
        assert server.port > 0
        nursery.cancel_scope.cancel()

    async def broken(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise ValueError("not a bind")

    async with trio.open_nursery() as nursery:
        with pytest.raises(BaseException) as raised:
            await start_listening(nursery, broken, "127.0.0.1", 1, "thing")
    assert [type(e) for e in leaves(raised.value)] == [ValueError]  # as nursery.start raised it

"""Starting a server on a TCP address, and naming that address when it cannot listen there.

A bind that fails deep inside trio-websocket or hypercorn reaches the node as
``OSError: [Errno 98] Address already in use``, with no word of which address, and a node such as
the WebSocket bridge listens on two. The one line a failed node leaves (``status``, ``apply
--wait``) should let a person act without opening the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from alphapulse.runtime._failure import leaves


def address(host: str, port: int) -> str:
    """``127.0.0.1:8766``, ``[::1]:8766``"""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_listening(nursery: trio.Nursery, serve: Callable[..., Awaitable[Any]], host: str, port: int,
                          what: str) -> Any:
    """``await nursery.start(serve)``, where ``serve`` listens on ``host:port``; an ``OSError``
    before it reports started (inside exception groups or not) comes back as one ``OSError`` with
    the same errno: ``[Errno 98] cannot listen on 127.0.0.1:8766 (dashboard): Address already
    in use``."""
    __tracebackhide__ = True  # the failure is the caller's: its line is the one a person needs
    try:
        return await nursery.start(serve)
    except (OSError, BaseExceptionGroup) as exc:
        cause = next((leaf for leaf in leaves(exc) if isinstance(leaf, OSError)), None)
        if cause is None:
            raise
        raise OSError(cause.errno, f"cannot listen on {address(host, port)} ({what}): "
                                   f"{cause.strerror or cause}") from exc

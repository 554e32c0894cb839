"""The upstream WebSocket loop every exchange adapter shares.

An adapter supplies what is particular to its venue — what to send after connecting, and what
to do with each received text frame — and this loop supplies the rest, the same for all:

* connect (``_wsclient``: wsproto over a trio stream); on failure, back off (capped exponential,
  with jitter) and retry;
* a circuit breaker (``ctx.breaker("upstream")``) counts failed connects: after N in a window it
  opens, connection attempts stop until the cool-down ends, then one probe is let through;
* a staleness timeout: connected but silent for ``stale_after`` seconds counts as a failure and
  reconnects (exchanges that stop sending without closing are common);
* every reconnect calls ``on_disconnect`` first, so the adapter clears its books and resyncs
  before publishing again (no stale book merged with a new snapshot);
* one block per read: every frame a socket read completed is handed to ``on_message`` (which
  adds its messages to the node's pending ones), and the loop flushes once after the last. A
  burst of exchange frames (41% of the Coinbase capture's frames follow the one before within
  100 µs) is then one block on every hop downstream, not one per frame;
* frames of a read that the session ended before handling (the adapter closed it to resync, its
  awaited I/O failed) are counted in ``dropped.session_closed``, never dropped silently.

Errors retried are named: OSError (refused, reset, DNS), the client's handshake and closed
connection errors, the staleness timeout, and ``UpstreamRejected`` (the venue refused us: wait
its ``retry_after`` before trying again). Anything else is a bug and crashes the node,
which supervisord restarts and counts.
"""

from __future__ import annotations

import dataclasses
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from alphapulse.runtime._input import Backoff
from alphapulse.runtime._upstream import UpstreamParams
from alphapulse.runtime._wsclient import WebSocketClient, WebSocketError, open_websocket

RETRIED = (OSError, WebSocketError, ssl.SSLError)


class UpstreamStale(Exception):
    """The upstream sent nothing for longer than the staleness timeout."""


class UpstreamRejected(Exception):
    """The venue refused the session (bad credentials, connection limit): raised by an adapter's
    callbacks, it ends the connection like any failure, but the next attempt waits at least
    ``retry_after`` seconds, so a refusal is never hammered."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    stale_after: float = 30.0
    """Seconds without any frame before the connection is declared stale and replaced."""
    connect_timeout: float = 10.0
    backoff: Backoff = dataclasses.field(default_factory=lambda: Backoff(initial=0.5, maximum=30.0))
    max_message_size: int = 64 * 1024 * 1024
    """Largest frame accepted (full-depth book snapshots run to tens of MB)."""


async def run_websocket_session(
    ctx: Any,
    url: str,
    *,
    on_connect: Callable[[WebSocketClient], Awaitable[None]],
    on_message: Callable[[str | bytes, int], Awaitable[None] | None],
    on_disconnect: Callable[[], None] | None = None,
    settings: SessionSettings | None = None,
    policy: Callable[[], UpstreamParams] | None = None,
    rng: random.Random | None = None,
    log_url: str | None = None,
) -> None:
    """Keep a session to ``url`` alive forever (until cancelled).

    ``on_message(frame, receive_ts_ns)`` is called for every frame, in order; it adds the messages
    the frame makes to ``ctx`` (``ctx.message``) and returns None, or an awaitable for I/O the
    frame calls for (a request to send, a resync), which is awaited before the next frame. The
    frames of one read share one ``receive_ts_ns``, and their messages go out as one block after
    the last (``ctx.flush``). ``log_url`` is
    what logs and errors show instead of ``url`` (the URL with its API key redacted).
    ``policy`` (usually ``lambda: self.params``, params inheriting :class:`UpstreamParams`) is
    read at every attempt: staleness, backoff and breaker thresholds follow live changes.
    """
    base = settings or SessionSettings()
    shown = url if log_url is None else log_url
    rng = rng or random.Random()
    breaker = ctx.breaker("upstream")
    if policy is not None:
        breaker.settings = lambda: policy().breaker_settings()
    attempt = 0
    while True:
        if policy is not None:
            current = policy()
            settings = dataclasses.replace(base, stale_after=current.staleness_timeout, backoff=current.backoff())
        else:
            settings = base
        now = trio.current_time()
        if not breaker.allow(now):
            await trio.sleep(breaker.seconds_until_probe(now))
            continue
        connected = False
        wait_at_least = 0.0
        try:
            async with open_websocket(
                url,
                max_message_size=settings.max_message_size,
                connect_timeout=settings.connect_timeout,
                disconnect_timeout=1.0,
            ) as ws:
                connected = True
                ctx.counters["upstream.connects"] += 1
                ctx.log.info("connected to %s", shown)
                await on_connect(ws)
                breaker.record_success(trio.current_time())
                attempt = 0
                counters = ctx.counters
                while True:
                    with trio.move_on_after(settings.stale_after) as scope:
                        frames = await ws.receive_batch()
                    if scope.cancelled_caught:
                        counters["upstream.stale"] += 1
                        raise UpstreamStale(f"no frame from {shown} for {settings.stale_after:.0f} s")
                    receive_ns = time.time_ns()
                    counters["upstream.frames"] += len(frames)
                    counters["upstream.reads"] += 1
                    handled = 0
                    try:
                        for frame in frames:
                            handled += 1
                            result = on_message(frame, receive_ns)
                            if result is not None:
                                await result
                                if ws.closed is not None:
                                    break  # the adapter ended the session (a resync): the rest is dropped
                    finally:
                        if handled < len(frames):
                            _count_unhandled(ctx, shown, len(frames) - handled)
                        ctx.flush_nowait()  # what the read's frames made goes out, even if one of them failed
                    if ws.closed is not None:
                        raise ws.closed
                    await ctx.flush()  # waits only while a ``block`` subscriber is over its limit
        except UpstreamRejected as exc:
            breaker.record_failure(trio.current_time())
            ctx.counters["upstream.rejected"] += 1
            wait_at_least = exc.retry_after
            ctx.log.error("upstream %s refused the session: %s; next attempt in %.0f s", shown, exc, exc.retry_after)
        except (*RETRIED, UpstreamStale) as exc:
            breaker.record_failure(trio.current_time())
            ctx.counters["upstream.failures"] += 1
            ctx.log.warning("upstream %s: %s: %s", shown, type(exc).__name__, exc)
        finally:
            if connected and on_disconnect is not None:
                on_disconnect()
        ctx.counters["upstream.reconnects"] += 1
        await trio.sleep(max(wait_at_least, settings.backoff.delay(attempt, rng)))
        attempt += 1


def _count_unhandled(ctx: Any, shown: str, count: int) -> None:
    """The session ended (a resync's close, a failed send, a rejection, shutdown) before every
    frame of its last read reached the adapter: those frames are dropped, and counted so.
    They are superseded by the next session's snapshot, but a drop is never silent."""
    ctx.counters["dropped.session_closed"] += count
    ctx.log.warning("upstream %s: the session ended with %d received frame(s) not handled (dropped.session_closed)",
                    shown, count)

"""One connected client: its subscriptions and its bounded outgoing queue.

The node's block handler never awaits a client. It offers each message with the synchronous
:meth:`Client.offer_nowait`, which applies the overflow policy at once:

1. *conflate*: when the queue is full, every queued message about state (a book, a best
   bid/ask, health — anything with a key) is dropped and replaced by one marker per key that
   says "send the current state of this when you get here"; while a marker is queued, new
   messages for its key are skipped, since the marker will render something newer anyway;
2. *drop*: if the queue is still full (it holds only events such as trades, which cannot be
   conflated), the client is too slow to keep: it is cancelled and closed.

Only the client's own writer task awaits the socket, so one slow client costs nothing but its
own queue. A book stream restarts with a snapshot whenever it was conflated or the client was
never given one (``primed``), so a client never applies a delta to the wrong base.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

from nodes._websocket._wire import CHANNELS, Pattern

Key = tuple[str, int]
"""(channel, instrument id) of a state message; ``("health", 0)`` for health."""


class Client:
    """A WebSocket client as the fan-out sees it; the socket itself stays with its tasks."""

    def __init__(self, number: int, remote: str, limit: int) -> None:
        self.number = number
        self.remote = remote
        self.limit = limit
        self.subscriptions: dict[str, dict[str, Pattern]] = {channel: {} for channel in CHANNELS}
        self.queue: deque[tuple[Key | None, str | None]] = deque()
        self.refresh: set[Key] = set()
        """Keys with a marker in the queue."""
        self.primed: set[Key] = set()
        """Books this client holds a snapshot of, so deltas apply."""
        self.cancel_scope = trio.CancelScope()
        self.closed_reason: str | None = None
        self.sent = 0
        self.conflations = 0
        self.superseded = 0
        self._ready = trio.Event()

    # -- subscriptions ----------------------------------------------------------------------------
    def wants(self, channel: str, instrument_id: int, symbol: str) -> bool:
        patterns = self.subscriptions[channel]
        if channel == "health":
            return bool(patterns)
        return any(p.matches(instrument_id, symbol) for p in patterns.values())

    def subscribe(self, channel: str, patterns: tuple[Pattern, ...]) -> None:
        for pattern in patterns:
            self.subscriptions[channel][pattern.text] = pattern

    def unsubscribe(self, channel: str, patterns: tuple[Pattern, ...] | None) -> None:
        """Remove these patterns (None: all of the channel); books no longer wanted lose their base."""
        if patterns is None:
            self.subscriptions[channel].clear()
        else:
            for pattern in patterns:
                self.subscriptions[channel].pop(pattern.text, None)

    def forget(self, keys: set[Key]) -> None:
        self.primed -= keys
        self.refresh -= keys
        self.queue = deque(item for item in self.queue if item[0] not in keys or item[1] is not None)

    # -- the fast path ------------------------------------------------------------------------------
    def offer_nowait(self, key: Key | None, text: str | None, *, needs_base: bool = False) -> bool:
        """Queue a message (``text`` None: a marker to render ``key``'s state when sent).

        ``needs_base``: the message is a delta that applies only on top of a snapshot. Returns
        False when the client is gone or has just been dropped for being too slow.
        """
        if self.closed_reason is not None:
            return False
        if key is not None:
            if key in self.refresh:
                self.superseded += 1
                return True
            if needs_base and key not in self.primed:
                text = None
        if len(self.queue) >= self.limit and not self._conflate():
            self.close("too slow")
            return False
        self.queue.append((key, text))
        if text is None:
            self.refresh.add(key)  # type: ignore[arg-type]
        self._ready.set()
        return True

    def _conflate(self) -> bool:
        """Replace queued state messages by one marker per key; True if that made room."""
        keys = dict.fromkeys(key for key, _ in self.queue if key is not None)
        if not keys:
            return False
        kept = deque(item for item in self.queue if item[0] is None)
        self.superseded += len(self.queue) - len(kept) - len(self.refresh)
        kept.extend((key, None) for key in keys)
        self.queue = kept
        self.refresh = set(keys)
        self.conflations += 1
        return len(self.queue) < self.limit

    def close(self, reason: str) -> None:
        """Stop serving this client (its tasks are cancelled; the socket is closed by its handler)."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self.cancel_scope.cancel()

    # -- the writer's side --------------------------------------------------------------------------
    async def next_item(self) -> tuple[Key | None, str | None]:
        """The next message, or a marker whose state the caller renders now (None text)."""
        while not self.queue:
            self._ready = trio.Event()
            await self._ready.wait()
        key, text = self.queue.popleft()
        if text is None:
            self.refresh.discard(key)  # type: ignore[arg-type]
        return key, text

    def statistics(self) -> dict[str, Any]:
        return {
            "client": self.number,
            "remote": self.remote,
            "subscriptions": {c: sorted(p) for c, p in self.subscriptions.items() if p},
            "queued": len(self.queue),
            "sent": self.sent,
            "conflations": self.conflations,
            "superseded": self.superseded,
        }

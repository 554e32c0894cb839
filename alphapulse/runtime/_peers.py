"""Peer delivery: a relay that introduces its subscribers to its publishers, then steps aside.

A relay on the data path is a second process woken per message, in series with the first. With
four subscribers on two cores that doubles the one-way latency of a paced stream (see "What the
relay's hop costs" in ``docs/architecture.md``). A relay whose ``delivery`` is ``peer`` keeps the
rendezvous role (subscribers still name only the relay; the relay knows its publishers) and
leaves the data path: it answers each Subscribe with one PeerIntroduction per publisher, and the
subscriber's link opens its own link to each of them. Each publisher then applies that
subscriber's filter, queue, overflow policy and resends itself: the same publisher code every
node already runs.

The subscriber keeps its connection to the relay open. If the relay restarts (its wiring was
edited), the connection drops, the link reconnects, and the new introduction replaces the old set:
links to publishers still introduced keep running (no gap, no new sequence tracker), others are
closed, new ones are opened.

Sans-IO where it can be: :func:`introduction` (relay side) and :func:`peer_specs` (subscriber
side) are pure functions; :class:`PeerLinks` only starts and cancels links.
"""

from __future__ import annotations

import dataclasses
import os.path
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import trio

from alphapulse import protocol

RETIRED_KEPT = 32
"""Statistics kept of links to publishers no longer introduced (their counts stay in the totals)."""


NO_PEERS = protocol.PeerIntroduction(publishers=0, types=(), instrument_ids=(), publisher=b"", socket="")
"""What a relay that routes the data itself says on Subscribe: read it from me, not from a peer
(so a subscriber whose relay switched from ``peer`` back to ``relay`` closes its peer links)."""


def introduction(inputs: Sequence[Any]) -> list[Any]:
    """The PeerIntroduction records a ``peer`` relay sends each subscriber: one per planned input
    (``InputSpec``), carrying the relay's own filter on that input; :data:`NO_PEERS` if none."""
    if not inputs:
        return [NO_PEERS]
    return [
        protocol.PeerIntroduction(
            publishers=len(inputs), types=tuple(spec.types), instrument_ids=tuple(spec.instruments),
            publisher=spec.node.encode(), socket=spec.socket,
        )
        for spec in inputs
    ]


def _narrowed(relays: tuple[int, ...], mine: tuple[int, ...]) -> tuple[int, ...] | None:
    """Both filters at once (empty = everything); None when together they let nothing through."""
    if not relays:
        return mine
    if not mine:
        return relays
    both = tuple(sorted(set(relays) & set(mine)))
    return both or None


def foreign_sockets(subscription: Any, records: Iterable[Any]) -> list[str]:
    """Introduced sockets outside the directory of the relay's own socket. A plan puts every data
    socket of a topology in one directory (the run directory's ``s/``, mode 0700), so a relay that
    names a socket elsewhere is not one this plan started: its introduction is refused whole."""
    home = os.path.dirname(os.path.normpath(subscription.socket))
    return [record.socket for record in records
            if record.publishers and os.path.dirname(os.path.normpath(record.socket)) != home]


def peer_specs(subscription: Any, records: Iterable[Any]) -> list[Any]:
    """The links a subscriber opens on an introduction: one ``InputSpec`` per publisher, with the
    subscriber's policy and the narrower of the two filters, CRCs checked (no relay checked them).
    A publisher whose frames the two filters together exclude entirely gets no link."""
    specs = []
    for record in records:
        if not record.publishers:
            continue
        types = _narrowed(tuple(record.types), subscription.types)
        instruments = _narrowed(tuple(record.instrument_ids), subscription.instruments)
        if types is None or instruments is None:
            continue
        specs.append(dataclasses.replace(
            subscription, node=record.publisher.decode(errors="replace"), socket=record.socket,
            types=types, instruments=instruments, verify_checksums=True,
        ))
    return specs


def peer_publishers(relay_inputs: Sequence[Any], subscription: Any) -> list[Any]:
    """What a subscriber of a ``peer`` relay reads, as it would on the relay's introduction: the
    relay's planned inputs (``InputSpec``s), each narrowed by ``subscription``'s filter (for a
    reader that knows the plan rather than asking the relay: ``alphapulse tap``)."""
    return peer_specs(subscription, introduction(relay_inputs))


class PeerLinks:
    """The links one subscription opened on its relay's introductions: started, kept and closed
    as introductions come. ``introduce`` is synchronous (it may run from trio's idle lane); the
    links themselves start and stop in :meth:`run`, the task that owns them."""

    def __init__(self, make_link: Callable[[Any], Any], run_link: Callable[[Any], Awaitable[None]],
                 on_retire: Callable[[Any], None]) -> None:
        self._make_link = make_link
        self._run_link = run_link
        self._on_retire = on_retire
        self._wanted: list[Any] = []
        self._changed = trio.Event()
        self._running: dict[Any, tuple[trio.CancelScope, Any]] = {}
        self.retired: list[Any] = []
        """statistics of links closed because their publisher was no longer introduced"""

    def introduce(self, specs: list[Any]) -> None:
        """The relay's current set of publishers (as ``InputSpec``\\ s); replaces the last one.
        Links to publishers left out are retired at once (they deliver nothing more, and
        ``on_retire`` hands their place in each source on) and closed by :meth:`run`."""
        self._wanted = specs
        for spec, (_, link) in self._running.items():
            if spec not in specs and not link.retired:
                link.retired = True
                self._on_retire(link)
        self._changed.set()

    @property
    def links(self) -> list[Any]:
        return [link for _, link in self._running.values()]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                wanted = self._wanted
                # a retired link goes even if named again since (it no longer delivers): a new one takes its place
                for spec in [spec for spec, (_, link) in self._running.items() if spec not in wanted or link.retired]:
                    scope, link = self._running.pop(spec)
                    scope.cancel()
                    self.retired.append(link.statistics())
                    del self.retired[:-RETIRED_KEPT]
                for spec in wanted:
                    if spec not in self._running:
                        link = self._make_link(spec)
                        scope = trio.CancelScope()
                        self._running[spec] = (scope, link)
                        nursery.start_soon(self._run_in, scope, link)

    async def _run_in(self, scope: trio.CancelScope, link: Any) -> None:
        with scope:
            await self._run_link(link)

"""NodeContext: everything a node kind may use, and nothing else.

A kind never touches sockets, fan-out or sequence numbers. It gets:

* ``ctx.message(*tlvs)`` to build one message (header, sequence, CRC stamped here) into the
  pending block, and ``await ctx.flush()`` to publish the pending block in one go;
  ``await ctx.emit(*tlvs)`` does both for one message;
* ``ctx.blocks()`` — the merged, sequence-checked stream of input blocks — for kinds that pull;
  kinds that define a sync ``handle_block(block, ctx)`` instead get each block pushed to them
  (no task switch per block) and their pending messages flushed right after;
* ``ctx.counters`` for kind-specific counts (shown by ``status``), ``ctx.log``,
  ``ctx.breaker(name)`` for circuit breakers that ``status`` reports,
  ``ctx.request_snapshot()`` to ask upstream producers for a fresh full state;
* ``ctx.plan``, the compiled plan the node runs in (read-only), e.g. to reach its peers'
  control sockets.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import trio

from alphapulse import protocol
from alphapulse.runtime._breaker import BreakerSettings, CircuitBreaker
from alphapulse.runtime._epoch import epoch_from_time, make_sequence


class NodeContext:
    def __init__(
        self,
        *,
        name: str,
        kind: str,
        source_id: int,
        relay_domain: int,
        log: logging.Logger,
        breaker_settings: BreakerSettings,
    ) -> None:
        self.name = name
        self.kind = kind
        self.source_id = source_id
        self.relay_domain = protocol.RelayDomain(relay_domain)
        self.log = log
        self.counters: Counter[str] = Counter()
        self.epoch = epoch_from_time(time.time_ns())
        self._builder = protocol.MessageBuilder(self.relay_domain, source_id, make_sequence(self.epoch, 1))
        self._pending: list[bytes] = []
        self._pending_count = 0
        self._breaker_settings = breaker_settings
        self.breakers: dict[str, CircuitBreaker] = {}
        self.plan: Mapping[str, Any] = {}
        # wired by the host
        self._publisher: Any = None
        self._inputs: list[Any] = []
        self._receive_blocks: trio.MemoryReceiveChannel | None = None

    # -- output ---------------------------------------------------------------------------------
    @property
    def has_output(self) -> bool:
        return self._publisher is not None

    @property
    def last_sequence(self) -> int:
        """Sequence of the last message built (epoch << 40 | counter)."""
        return self._builder.next_sequence - 1

    def message(self, *tlvs: Any, timestamp_ns: int | None = None, relay_domain: int | None = None) -> None:
        """Build one message from TLVs (records or encoded TLV bytes) into the pending block."""
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        builder = self._builder
        if relay_domain is None or relay_domain == builder.relay_domain:
            self._pending.append(builder.build(tlvs[0] if len(tlvs) == 1 else list(tlvs), ts))
        else:
            payload = b"".join(t if isinstance(t, (bytes, bytearray)) else protocol.encode(t) for t in tlvs)
            sequence = builder.next_sequence
            self._pending.append(protocol.encode_message(relay_domain, self.source_id, sequence, ts, payload))
            builder.next_sequence += 1
        self._pending_count += 1

    def messages(self, tlvs: Iterable[Any], timestamp_ns: int | None = None) -> None:
        """One message per TLV, all into the pending block."""
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        for tlv in tlvs:
            self.message(tlv, timestamp_ns=ts)

    @property
    def pending(self) -> int:
        return self._pending_count

    def flush_nowait(self) -> None:
        if not self._pending:
            return
        # one builder numbered them one after another: the block says so, as a decoded one does
        first = self._builder.next_sequence - len(self._pending)
        block = protocol.FrameBlock.join(self._pending, sequence_run=(self.source_id, first))
        self._pending.clear()
        self._pending_count = 0
        if self._publisher is None:
            raise RuntimeError(f"node {self.name} ({self.kind}) has no output to publish to")
        self._publisher.publish_nowait(block)

    async def flush(self) -> None:
        """Publish the pending messages as one block; waits only for ``block`` subscribers."""
        self.flush_nowait()
        if self._publisher is not None:
            await self._publisher.wait_for_space()

    async def emit(self, *tlvs: Any, timestamp_ns: int | None = None) -> None:
        self.message(*tlvs, timestamp_ns=timestamp_ns)
        await self.flush()

    def publish_block_nowait(self, block: Any) -> None:
        """Re-publish frames as they are (relays): no re-encoding, sequences untouched."""
        self._publisher.publish_nowait(block)

    async def publish_block(self, block: Any) -> None:
        self._publisher.publish_nowait(block)
        await self._publisher.wait_for_space()

    async def wait_for_subscribers(self, count: int = 1) -> None:
        """Wait until ``count`` downstream nodes have subscribed (a replay does, so nothing it
        plays goes to nobody); returns at once for ``count`` 0."""
        if count > 0 and self._publisher is not None:
            await self._publisher.wait_for_subscribers(count)

    # -- input ------------------------------------------------------------------------------------
    async def blocks(self) -> AsyncIterator[Any]:
        """Every delivered input block, in order per source, until the node stops."""
        if self._receive_blocks is None:
            raise RuntimeError(f"node {self.name} ({self.kind}) has no inputs, or handles blocks itself")
        async for block in self._receive_blocks:
            yield block

    def request_snapshot(self, source: int = 0, instrument_id: int = 0) -> None:
        """Ask upstream for a full state: of one source, or (0) of every source each link has seen."""
        for link in self._inputs:
            if source == 0 or link.has_seen(source):
                link.request_snapshot(source, instrument_id)

    # -- health ----------------------------------------------------------------------------------
    def breaker(self, name: str, settings: BreakerSettings | None = None) -> CircuitBreaker:
        """A named breaker owned by this node; its state shows in ``status``."""
        if name not in self.breakers:
            self.breakers[name] = CircuitBreaker(
                f"{self.name}.{name}", settings or self._breaker_settings, on_transition=self._breaker_moved
            )
        return self.breakers[name]

    def _breaker_moved(self, name: str, old: Any, new: Any) -> None:
        self.counters[f"breaker.{new.value}"] += 1
        self.log.warning("breaker %s: %s -> %s", name, old.value, new.value)

"""``relay``: fan-out router for one relay domain."""

from __future__ import annotations

import dataclasses
from typing import Literal

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import RelayDomain
from alphapulse.runtime import relay_domains


@dataclasses.dataclass(frozen=True)
class RelayParams:
    retransmit_buffer: int = param(
        65536,
        doc="Most recent messages (all sources together) kept to answer resend requests; "
        "older ranges are asked of the producer (its own buffer), and what it no longer holds "
        "is answered 'unavailable': the consumer counts it lost and falls back to a snapshot.",
        minimum=0,
    )
    delivery: Literal["relay", "peer"] = param(
        "relay",
        doc="'relay': frames pass through this relay (one place checks CRCs, queues per subscriber and "
        "answers resends). 'peer': this relay introduces each subscriber to its publishers and leaves "
        "the data path; each publisher then serves the subscriber itself, with the same filter, queue, "
        "overflow policy and resends: one process hop less per message.",
    )


@node_kind("relay", emits=None, example={"retransmit_buffer": 100000})
class Relay(Node):
    """Relay: merges its inputs and re-publishes them to subscribers without re-encoding.

    Routes one relay domain (declared by the node's ``domain``), filters per subscriber by TLV
    type and instrument, and answers resend requests from a bounded retransmit buffer (passing
    on upstream what it does not hold, e.g. after a restart). With
    ``delivery: peer`` it only introduces subscribers to its publishers (``runtime._peers``).
    """

    Params = RelayParams
    forwards_verbatim = True
    """``handle_block`` sends on every frame of this relay's domain unchanged, so the host may
    check and send whole-frame reads itself, natively, before any Python sees them
    (``alphapulse/runtime/_forward.py``); anything else still comes here."""

    @property
    def introduces_peers(self) -> bool:
        """Read by the host: subscribers get introductions, and this relay reads no input."""
        return self.params.delivery == "peer"

    def handle_block(self, block, ctx) -> None:
        """Forward frames of this relay's domain (and system frames) as they are."""
        if block.relay_domain_all == ctx.relay_domain:  # known from the decoder's parse: no kernel call
            ctx.publish_block_nowait(block)
            return
        domains = relay_domains(block)  # this column only: the relay needs no other header field
        # the common case: every frame of our domain. Comparing the uint8 column's bytes costs
        # ~0.1 µs; numpy's ``(domains == d).all()`` ~2 µs, a real share of a small block's cost
        if domains.tobytes() == bytes((ctx.relay_domain,)) * len(domains):
            ctx.publish_block_nowait(block)
            return
        wanted = (domains == ctx.relay_domain) | (domains == RelayDomain.SYSTEM)
        if wanted.all():
            ctx.publish_block_nowait(block)
            return
        ctx.counters["dropped.wrong_domain"] += int((~wanted).sum())
        if wanted.any():
            ctx.publish_block_nowait(block.select(wanted))

    async def run(self, ctx):
        await trio.sleep_forever()

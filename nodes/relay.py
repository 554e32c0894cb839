"""``relay``: fan-out router for one relay domain."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param


@dataclasses.dataclass(frozen=True)
class RelayParams:
    retransmit_buffer: int = param(
        65536, doc="Messages kept per source for resend requests; older ranges are answered "
        "'unavailable' and the consumer falls back to a snapshot.", minimum=0,
    )
    max_subscribers: int = param(64, doc="Subscribers accepted at once.", minimum=1)
    verify_crc: bool = param(
        True, doc="Check every frame's CRC (in batch) before forwarding; bad frames are counted "
        "and dropped.",
    )


@node_kind("relay", emits=None, example={"retransmit_buffer": 100000})
class Relay(Node):
    """Relay: merges its inputs and re-publishes them to subscribers without re-encoding.

    Routes one relay domain (declared by the node's ``domain``), filters per subscriber by TLV
    type and instrument, and answers resend requests from a bounded retransmit buffer.
    """

    Params = RelayParams

    async def run(self, ctx):
        raise NotImplementedError("relay is implemented by issue #4")

"""``source.replay``: play a recording or an exchange capture back into a topology."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class ReplayParams:
    path: str = param(
        doc="Recording file, directory of rotated recordings, or capture file; relative paths "
        "are relative to the topology file.", minLength=1,
    )
    format: Literal["auto", "recorder", "capture"] = param(
        "auto", doc="recorder: our framed TLV files (bit-for-bit); capture: exchange JSON "
        "captures; auto: decide from the file.",
    )
    speed: float = param(
        1.0, doc="Playback speed relative to the recorded timestamps; 0 plays as fast as possible.",
        live=True, minimum=0,
    )
    loop: bool = param(False, doc="Start over at the end instead of stopping.", live=True)


@node_kind(
    "source.replay",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
           TLVType.BAR, TLVType.POOL_SWAP, TLVType.POOL_MINT, TLVType.POOL_BURN,
           TLVType.POOL_SYNC, TLVType.EVM_LOG, TLVType.POOL_EVENT_RETRACTION,
           TLVType.ARBITRAGE_SIGNAL, TLVType.INSTRUMENT_MAPPING],
    example={"path": "recordings/demo", "speed": 10, "loop": True},
)
class Replay(Node):
    """Replay source: plays recorder files bit-for-bit, or exchange captures, at any speed.

    Recorder files keep their original headers, so an incident reproduces exactly.
    """

    Params = ReplayParams

    async def run(self, ctx):
        raise NotImplementedError("source.replay is implemented by issue #5")

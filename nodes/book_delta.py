"""``transform.book_delta``: track order books, emit compact deltas and periodic snapshots."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class BookDeltaParams:
    depth: int = param(50, doc="Levels per side tracked and diffed (top-N).", minimum=1,
                       maximum=5000)
    snapshot_interval: float = param(
        30.0, doc="Seconds between full OrderBook snapshots per instrument; 0 sends snapshots "
        "only on request.", live=True, minimum=0,
    )
    max_instruments: int = param(
        4096, doc="Books kept at most; arrays are preallocated for this many.", minimum=1,
    )
    pass_through_snapshots: bool = param(
        False, doc="Also forward upstream snapshots unchanged, besides the computed deltas.",
        live=True,
    )


@node_kind(
    "transform.book_delta",
    emits=[TLVType.ORDER_BOOK_DELTA, TLVType.ORDER_BOOK, TLVType.INSTRUMENT_MAPPING],
    accepts=[TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.INSTRUMENT_MAPPING],
    example={"depth": 20, "snapshot_interval": 10},
)
class BookDelta(Node):
    """Order-book tracker: keeps every book and emits only the levels that changed.

    Books are fixed-point numpy arrays diffed by numba kernels; a full snapshot goes out at
    ``snapshot_interval`` and whenever a consumer asks for one during gap recovery.
    """

    Params = BookDeltaParams

    async def run(self, ctx):
        raise NotImplementedError("transform.book_delta is implemented by issue #6")

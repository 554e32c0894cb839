"""``transform.dex_classify``: classify EVM logs by event signature into pool events."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class DexClassifyParams:
    chain: str = param("polygon", doc="Chain name used in pool instrument ids.",
                       pattern="^[a-z0-9_.]+$")
    pools_file: str | None = param(
        None, doc="Optional JSON file of pool metadata (tokens, decimals) for enrichment; "
        "relative to the topology file. Never queried over RPC.",
    )
    events: tuple[str, ...] = param(
        ("swap", "mint", "burn", "sync"), doc="Event families to decode; others are counted "
        "as unknown per topic0.", minItems=1, uniqueItems=True,
        items={"enum": ["swap", "mint", "burn", "sync"]},
    )


@node_kind(
    "transform.dex_classify",
    emits=[TLVType.POOL_SWAP, TLVType.POOL_MINT, TLVType.POOL_BURN, TLVType.POOL_SYNC,
           TLVType.POOL_EVENT_RETRACTION, TLVType.INSTRUMENT_MAPPING],
    accepts=[TLVType.EVM_LOG, TLVType.POOL_EVENT_RETRACTION],
    example={"chain": "polygon", "events": ["swap"]},
)
class DexClassify(Node):
    """DEX classifier: decodes UniswapV2/V3 and Curve events by topic0, exactly, without RPC.

    Amounts keep native precision (uint256/int256, no floats); reorg retractions pass through.
    """

    Params = DexClassifyParams

    async def run(self, ctx):
        raise NotImplementedError("transform.dex_classify is implemented by issue #6")

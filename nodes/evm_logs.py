"""``source.evm_logs``: EVM logs over WebSocket JSON-RPC, with backfill and reorg retraction."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class EvmLogsParams:
    chain: str = param("polygon", doc="Chain name used in pool instrument ids (pool:<chain>:0x…).",
                       pattern="^[a-z0-9_.]+$")
    endpoint: str = param(
        "wss://polygon-bor-rpc.publicnode.com",
        doc="WebSocket JSON-RPC URL; '{api_key}' in it is replaced by api_key at start.",
        pattern="^wss?://",
    )
    backfill_endpoint: str | None = param(
        None, doc="HTTP JSON-RPC URL for eth_getLogs backfill after a reconnect; null uses the "
        "WebSocket connection.", pattern="^(https?|wss?)://",
    )
    api_key: str = param(
        "", doc="RPC provider API key, if the endpoint needs one. A secret: write it as ${VAR}.",
        secret=True,
    )
    addresses: tuple[str, ...] = param(
        (), doc="Only logs from these contract addresses; empty means any address.",
        items={"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
    )
    topics: tuple[str, ...] = param(
        (), doc="Only logs whose topic0 is one of these; empty means any.",
        items={"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
    )
    confirmations: int = param(
        0, doc="Blocks to wait before publishing a log; 0 publishes at once and retracts on reorg.",
        minimum=0,
    )
    max_backfill_blocks: int = param(
        2000, doc="Largest block range backfilled after a reconnect; larger gaps are reported.",
        minimum=1,
    )


@node_kind(
    "source.evm_logs",
    emits=[TLVType.EVM_LOG, TLVType.POOL_EVENT_RETRACTION],
    example={"chain": "polygon", "endpoint": "wss://polygon-mainnet.g.alchemy.com/v2/{api_key}",
             "api_key": "${ALCHEMY_API_KEY}"},
)
class EvmLogs(Node):
    """EVM log source: eth_subscribe logs, eth_getLogs backfill so no block range is skipped.

    A log delivered with ``removed: true`` (a reorg) is published as a retraction.
    """

    Params = EvmLogsParams

    async def run(self, ctx):
        raise NotImplementedError("source.evm_logs is implemented by issue #6")

"""One representative record per TLV type, shared by the encoder and decoder tests."""

from __future__ import annotations

import alphapulse.protocol as P

BTC = P.spot("coinbase", "BTC", "USD").id
POOL = P.pool("polygon", "0x45dda9cb7c25131df268515131f647d726f50608")
ADDR_A = bytes.fromhex("2791bca1f2de4661ed88a30c99a7a9449aa84174")  # USDC (Polygon)
ADDR_B = bytes.fromhex("7ceb23fd6bc0add59e62ac25578270cff1b9f619")  # WETH (Polygon)
TX = bytes(range(32))
TOPIC = bytes.fromhex("d78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822")

RECORDS: dict[str, object] = {
    "trade": P.Trade(BTC, P.parse_fixed("65000.12345678"), P.parse_fixed("0.5"), 1_700_000_000_123_456_789, P.Side.BUY),
    "quote": P.Quote(BTC, 6_500_000_000_000, 100_000_000, 6_500_100_000_000, 25_000_000, 1_700_000_000_000_000_000),
    "order_book": P.OrderBook(BTC, 1_700_000_000_000_000_000, 42, ((101, 5), (100, 7)), ((102, 1), (103, 2), (104, 3))),
    "pool_swap": P.PoolSwap(
        POOL.id,
        50_000_000,
        TX,
        7,
        P.PoolProtocol.UNISWAP_V3,
        6,
        18,
        ADDR_A,
        ADDR_B,
        1_000_000_000,
        2**255 + 12345,
        2**159 + 1,
        2**127 + 3,
        -887272,
    ),
    "pool_mint": P.PoolMint(
        POOL.id,
        50_000_001,
        TX,
        8,
        P.PoolProtocol.UNISWAP_V2,
        6,
        18,
        ADDR_B,
        ADDR_A,
        ADDR_B,
        2**256 - 1,
        0,
        10**30,
        -60,
        60,
    ),
    "pool_burn": P.PoolBurn(
        POOL.id,
        50_000_002,
        TX,
        9,
        P.PoolProtocol.CURVE,
        18,
        6,
        ADDR_A,
        ADDR_A,
        ADDR_B,
        123,
        456,
        789,
        0,
        0,
    ),
    "order_book_delta": P.OrderBookDelta(BTC, 1_700_000_000_000_000_001, 43, 42, 0, ((101, 0, 0), (105, 9, 1))),
    "bar": P.Bar(BTC, 1_700_000_000_000_000_000, 60_000_000_000, 10, 20, 5, 15, 1000, 12, 77),
    "evm_log": P.EvmLog(
        POOL.id,
        137,
        50_000_000,
        TX,
        3,
        bytes.fromhex("45dda9cb7c25131df268515131f647d726f50608"),
        0,
        (TOPIC, TX),
        b"\x01\x02\x03",
    ),
    "pool_event_retraction": P.PoolEventRetraction(POOL.id, 50_000_000, TX, 7, int(P.TLVType.POOL_SWAP)),
    "pool_sync": P.PoolSync(
        POOL.id, 50_000_003, TX, 1, P.PoolProtocol.UNISWAP_V2, 6, 18, ADDR_A, ADDR_B, 10**12, 5 * 10**20, 0, 0, 0
    ),
    "signal_identity": P.SignalIdentity(99, 3, int(P.TLVType.ARBITRAGE_SIGNAL), 80, 500),
    "arbitrage_signal": P.ArbitrageSignal(
        BTC, POOL.id, 99, 100, 110, 5, 95_000_000_000, 2, 48, 1_700_000_000_000_000_000, (7, 8)
    ),
    "momentum_signal": P.MomentumSignal(BTC, 100, -1_000_000, 60_000, -1, 70),
    "liquidation_alert": P.LiquidationAlert(
        BTC, -500_000_000, 6_000_000_000_000, 6_100_000_000_000, 1, 10_100, P.Side.SELL, 2
    ),
    "order_request": P.OrderRequest(
        BTC, 555, 99, 6_500_000_000_000, 10_000_000, 0, 3, P.Side.BUY, P.OrderType.LIMIT, P.TimeInForce.IOC, 0, "arb-1"
    ),
    "order_ack": P.OrderAck(BTC, 555, 987654321, 850, P.OrderStatus.ACCEPTED, 0),
    "fill": P.Fill(
        BTC, 555, 6_500_000_000_000, 10_000_000, -1_000, 1_700_000_000_000_000_000, 0, P.Side.BUY, P.Liquidity.TAKER
    ),
    "cancel": P.Cancel(BTC, 555, 3, 1, 0),
    "gas_price": P.GasPrice(137, 50_000_000, 30_000_000_000, 2_000_000_000, 5_500),
    "heartbeat": P.Heartbeat(0xABCDEF, 1234, 5_000_000_000, 1000),
    "status_report": P.StatusReport(5_000_000_000, 10, 9, 1, 0, P.NodeState.RUNNING, '{"lag_ms":3}'),
    "instrument_mapping": P.mapping_for(P.spot("coinbase", "BTC", "USD")),
    "subscribe": P.Subscribe(1, 4096, (1, 2), (BTC,), "relay"),
    "resend_request": P.ResendRequest(7, 100, 120),
    "resend_unavailable": P.ResendUnavailable(7, 100, 120, 110),
    "snapshot_request": P.SnapshotRequest(7, 0),
    "snapshot_complete": P.SnapshotComplete(7, BTC, 1234),
    "peer_introduction": P.PeerIntroduction(1, (1, 2), (BTC,), b"src", "/run/rb/src.sock"),
    "sequence_head": P.SequenceHead(7, (3 << 40) | 1234),
}

"""THE table: every TLV type's byte layout, one row each.

This is the only place a field's position on the wire is written down. Records, encoders,
decoders, numpy dtypes and ``docs/protocol.md`` are all derived from ``LAYOUTS``; adding a TLV
type means adding a ``TLVType`` number and one row here.

Conventions every row keeps:

* little-endian throughout; fixed-size values are checked against ``size=`` at import;
* instrument-scoped values (``scoped=True``) start with ``instrument_id: u64``, so a batch filter
  can read 8 bytes at the value's start without knowing the type;
* CEX prices and quantities are ``fixed`` (i64 at 10^8); DEX amounts keep native precision as
  raw ``u256`` plus the token's ``decimals``;
* reserved bytes are written as zero and ignored on read.

The ``size`` of a value excludes the TLV header (2 bytes standard, 5 extended): the V2 guide's
"TradeTLV 40B" is a 38-byte value plus its 2-byte header.
"""

from __future__ import annotations

import enum

from alphapulse.protocol._codec import (
    ADDRESS,
    FIXED,
    HASH32,
    I8,
    I32,
    U8,
    U16,
    U32,
    U64,
    U128,
    U160,
    U256,
    Array,
    Blob,
    Count,
    Field,
    Layout,
    Pad,
    Text,
)
from alphapulse.protocol._types import TLVType

T = TLVType


class Side(enum.IntEnum):
    """Aggressor side of a trade, or the side of an order/fill."""

    UNKNOWN = 0
    BUY = 1
    SELL = 2


class BookSide(enum.IntEnum):
    """Side of a book level in an OrderBookDelta change."""

    BID = 0
    ASK = 1


class PoolProtocol(enum.IntEnum):
    """Pool family, classified by event signature (QuickSwap, SushiSwap... are UniswapV2)."""

    UNKNOWN = 0
    UNISWAP_V2 = 1
    UNISWAP_V3 = 2
    CURVE = 3


class OrderType(enum.IntEnum):
    MARKET = 0
    LIMIT = 1


class TimeInForce(enum.IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2
    POST_ONLY = 3


class OrderStatus(enum.IntEnum):
    ACCEPTED = 0
    REJECTED = 1
    CANCELLED = 2
    EXPIRED = 3


class Liquidity(enum.IntEnum):
    UNKNOWN = 0
    MAKER = 1
    TAKER = 2


class NodeState(enum.IntEnum):
    STARTING = 0
    RUNNING = 1
    DEGRADED = 2
    STOPPING = 3


def _iid(doc: str = "instrument id (64-bit BLAKE2b of the canonical descriptor)") -> Field:
    return Field("instrument_id", U64, doc)


_LEVEL = (("price", FIXED), ("qty", FIXED))
_POOL_ID = "pool instrument id: `pool(chain, address).id`"
_CHAIN_EVENT = (
    Field("block_number", U64, "block that holds the event"),
    Field("tx_hash", HASH32, "transaction hash"),
    Field("log_index", U32, "log index within the block"),
)
_PROTOCOL = Field("protocol", U8, "PoolProtocol: 0 unknown, 1 UniswapV2, 2 UniswapV3, 3 Curve")
_V3_STATE = (
    Field("sqrt_price_x96", U160, "V3 sqrtPriceX96 after the event; 0 for V2 and Curve"),
    Field("liquidity", U128, "V3 in-range liquidity after the event; 0 for V2 and Curve"),
    Field("tick", I32, "V3 current tick after the event (i24 on chain); 0 for V2 and Curve"),
)
_MINT_BURN = (
    _iid(_POOL_ID),
    *_CHAIN_EVENT,
    _PROTOCOL,
    Field("decimals0", U8, "token0 decimals"),
    Field("decimals1", U8, "token1 decimals"),
    Pad(1),
    Field("owner", ADDRESS, "position owner / liquidity provider"),
    Field("token0", ADDRESS, "token0 address"),
    Field("token1", ADDRESS, "token1 address"),
    Field("amount0", U256, "token0 amount, raw units (divide by 10**decimals0)"),
    Field("amount1", U256, "token1 amount, raw units (divide by 10**decimals1)"),
    Field("liquidity", U128, "liquidity delta (V3 position, V2 LP tokens)"),
    Field("tick_lower", I32, "V3 position lower tick; 0 for V2 and Curve"),
    Field("tick_upper", I32, "V3 position upper tick; 0 for V2 and Curve"),
)

LAYOUTS: dict[TLVType, Layout] = {
    layout.tlv_type: layout
    for layout in (
        # ---- market data (1-19) ------------------------------------------------------------
        Layout(
            T.TRADE,
            "An executed trade on a venue.",
            (
                _iid(),
                Field("price", FIXED, "trade price"),
                Field("quantity", FIXED, "traded quantity (base units)"),
                Field("exchange_ts_ns", U64, "venue's trade time, Unix ns (0 = unknown)"),
                Field("side", U8, "aggressor Side: 0 unknown, 1 buy, 2 sell", 0),
                Field("flags", U8, "bit 0: replayed/recovered, not live; others 0", 0),
                Pad(4),
            ),
            size=38,
            scoped=True,
        ),
        Layout(
            T.QUOTE,
            "Best bid and offer.",
            (
                _iid(),
                Field("bid_price", FIXED, "best bid price (0 with bid_qty 0 = no bid)"),
                Field("bid_qty", FIXED, "quantity at the best bid"),
                Field("ask_price", FIXED, "best ask price (0 with ask_qty 0 = no ask)"),
                Field("ask_qty", FIXED, "quantity at the best ask"),
                Field("exchange_ts_ns", U64, "venue's quote time, Unix ns (0 = unknown)"),
                Field("flags", U16, "bit 0: replayed/recovered, not live; others 0", 0),
            ),
            size=50,
            scoped=True,
        ),
        Layout(
            T.ORDER_BOOK,
            "Full order-book snapshot (usually an extended TLV). Levels are (price, qty) "
            "fixed-point pairs; `order_book_levels()` views them as numpy arrays without copying.",
            (
                _iid(),
                Field("exchange_ts_ns", U64, "venue's book time, Unix ns"),
                Field("exchange_sequence", U64, "venue's book sequence (update id); 0 if none"),
                Count("n_bids", U16, "bids"),
                Count("n_asks", U16, "asks"),
            ),
            (
                Array("bids", _LEVEL, "bid levels, best (highest) first"),
                Array("asks", _LEVEL, "ask levels, best (lowest) first"),
            ),
            scoped=True,
        ),
        Layout(
            T.POOL_SWAP,
            "A DEX swap, amounts in the tokens' native precision.",
            (
                _iid(_POOL_ID),
                *_CHAIN_EVENT,
                _PROTOCOL,
                Field("decimals_in", U8, "decimals of token_in"),
                Field("decimals_out", U8, "decimals of token_out"),
                Pad(1),
                Field("token_in", ADDRESS, "token paid into the pool"),
                Field("token_out", ADDRESS, "token taken out of the pool"),
                Field("amount_in", U256, "amount paid in, raw units (>= 0)"),
                Field("amount_out", U256, "amount taken out, raw units (>= 0)"),
                *_V3_STATE,
            ),
            size=200,
            scoped=True,
        ),
        Layout(T.POOL_MINT, "Liquidity added to a DEX pool.", _MINT_BURN, size=204, scoped=True),
        Layout(T.POOL_BURN, "Liquidity taken from a DEX pool.", _MINT_BURN, size=204, scoped=True),
        Layout(
            T.ORDER_BOOK_DELTA,
            "Incremental order-book changes between two venue sequences. Each change sets a "
            "level's quantity; qty 0 removes the level. `order_book_changes()` gives a numpy view.",
            (
                _iid(),
                Field("exchange_ts_ns", U64, "venue's update time, Unix ns"),
                Field("exchange_sequence", U64, "venue sequence after this delta"),
                Field("prev_sequence", U64, "venue sequence this delta applies on (0 = unknown)"),
                Count("n_changes", U16, "changes"),
                Field("flags", U8, "bit 0: replayed/recovered, not live; others 0"),
            ),
            (
                Array(
                    "changes",
                    (("price", FIXED), ("qty", FIXED), ("side", U8)),
                    "17-byte changes; side 0 bid, 1 ask (BookSide)",
                ),
            ),
            scoped=True,
        ),
        Layout(
            T.BAR,
            "An OHLCV bar over [start_ns, start_ns + duration_ns).",
            (
                _iid(),
                Field("start_ns", U64, "bar open time, Unix ns"),
                Field("duration_ns", U64, "bar length in ns"),
                Field("open", FIXED, "first trade price"),
                Field("high", FIXED, "highest trade price"),
                Field("low", FIXED, "lowest trade price"),
                Field("close", FIXED, "last trade price"),
                Field("volume", FIXED, "traded quantity"),
                Field("vwap", FIXED, "volume-weighted average price (0 if no volume)"),
                Field("trade_count", U32, "number of trades"),
                Pad(4),
            ),
            size=80,
            scoped=True,
        ),
        Layout(
            T.EVM_LOG,
            "A raw EVM log from a chain source, before any decoding.",
            (
                _iid("instrument id of the emitting contract: `pool(chain, address).id`"),
                Field("chain_id", U64, "EIP-155 chain id (137 = Polygon)"),
                *_CHAIN_EVENT,
                Field("address", ADDRESS, "emitting contract"),
                Field("removed", U8, "1 if the log was removed by a reorg"),
                Count("n_topics", U8, "topics"),
                Count("data_length", U16, "data"),
            ),
            (
                Array("topics", (("topic", HASH32),), "topics, topic 0 = event signature"),
                Blob("data", "the log's data bytes"),
            ),
            scoped=True,
        ),
        Layout(
            T.POOL_EVENT_RETRACTION,
            "A chain reorg removed an event published earlier (same block, tx and log index).",
            (
                _iid(_POOL_ID),
                *_CHAIN_EVENT,
                Field("retracted_type", U8, "TLV type of the retracted event (PoolSwap, ...)"),
                Pad(3),
            ),
            size=56,
            scoped=True,
        ),
        Layout(
            T.POOL_SYNC,
            "A DEX pool's state after an event: V2 reserves or V3 price/liquidity/tick.",
            (
                _iid(_POOL_ID),
                *_CHAIN_EVENT,
                _PROTOCOL,
                Field("decimals0", U8, "token0 decimals"),
                Field("decimals1", U8, "token1 decimals"),
                Pad(1),
                Field("token0", ADDRESS, "token0 address"),
                Field("token1", ADDRESS, "token1 address"),
                Field("reserve0", U256, "token0 reserve, raw units (V2/Curve; 0 for V3)"),
                Field("reserve1", U256, "token1 reserve, raw units (V2/Curve; 0 for V3)"),
                *_V3_STATE,
            ),
            size=200,
            scoped=True,
        ),
        # ---- signals (20-39) ---------------------------------------------------------------
        Layout(
            T.SIGNAL_IDENTITY,
            "Metadata that introduces the signal TLV following it in the same message.",
            (
                Field("signal_id", U64, "unique per strategy"),
                Field("strategy_id", U16, "strategy that produced the signal"),
                Field("signal_kind", U8, "TLV type of the signal it introduces"),
                Field("confidence", U8, "0-100"),
                Field("valid_for_ms", U16, "how long the signal stays actionable (0 = unbounded)"),
            ),
            size=14,
            scoped=False,
        ),
        Layout(
            T.ARBITRAGE_SIGNAL,
            "A cross-venue arbitrage opportunity: buy on one instrument, sell on another.",
            (
                _iid("buy leg: instrument to buy on"),
                Field("sell_instrument_id", U64, "sell leg: instrument to sell on"),
                Field("signal_id", U64, "unique per strategy"),
                Field("buy_price", FIXED, "expected buy price"),
                Field("sell_price", FIXED, "expected sell price"),
                Field("max_quantity", FIXED, "largest quantity the opportunity supports"),
                Field("net_spread_bps", FIXED, "spread after fees, in bps (fixed-point 10^8)"),
                Field("fees", FIXED, "estimated fees and gas for max_quantity, quote currency"),
                Field("net_profit", FIXED, "expected profit for max_quantity after fees"),
                Field("detected_ns", U64, "market time of the data that revealed it, Unix ns"),
                Count("n_path", U8, "path"),
            ),
            (Array("path", (("instrument_id", U64),), "intermediate hops of a multi-leg route"),),
            scoped=True,
        ),
        Layout(
            T.MOMENTUM_SIGNAL,
            "A momentum reading on one instrument.",
            (
                _iid(),
                Field("signal_id", U64, "unique per strategy"),
                Field("momentum", FIXED, "signed return over the horizon (0.01 = 1%)"),
                Field("horizon_ms", U32, "look-back horizon"),
                Field("direction", I8, "-1 down, 0 flat, +1 up"),
                Field("strength", U8, "0-100"),
            ),
            size=30,
            scoped=True,
        ),
        Layout(
            T.LIQUIDATION_ALERT,
            "A position close to liquidation.",
            (
                _iid(),
                Field("position_size", FIXED, "position size (base units, signed: short < 0)"),
                Field("liquidation_price", FIXED, "price at which the position is liquidated"),
                Field("mark_price", FIXED, "current mark price"),
                Field("detected_ns", U64, "market time of detection, Unix ns"),
                Field("health_factor_bps", U32, "collateral / requirement, bps (10000 = at limit)"),
                Field("side", U8, "position Side"),
                Field("severity", U8, "0 info, 1 warning, 2 critical"),
            ),
            size=46,
            scoped=True,
        ),
        # ---- execution (40-79) -------------------------------------------------------------
        Layout(
            T.ORDER_REQUEST,
            "A new order for an execution node.",
            (
                _iid(),
                Field("client_order_id", U64, "unique per strategy"),
                Field("signal_id", U64, "signal that caused the order (0 = none)"),
                Field("price", FIXED, "limit price (ignored for market orders)"),
                Field("quantity", FIXED, "order quantity, base units"),
                Field("expires_ns", U64, "give up after this Unix ns (0 = never)"),
                Field("strategy_id", U16, "strategy placing the order"),
                Field("side", U8, "Side: 1 buy, 2 sell"),
                Field("order_type", U8, "OrderType: 0 market, 1 limit"),
                Field("time_in_force", U8, "TimeInForce: 0 GTC, 1 IOC, 2 FOK, 3 post-only"),
                Field("flags", U8, "bit 0: reduce-only; others 0"),
            ),
            (Text("tag", "free text for the venue (client tag); may be empty"),),
            scoped=True,
        ),
        Layout(
            T.ORDER_ACK,
            "The venue's answer to an OrderRequest.",
            (
                _iid(),
                Field("client_order_id", U64, "from the OrderRequest"),
                Field("exchange_order_id", U64, "venue's order id (0 if rejected)"),
                Field("latency_us", U32, "request-to-ack round trip"),
                Field("status", U8, "OrderStatus: 0 accepted, 1 rejected, 2 cancelled, 3 expired"),
                Field("reason", U8, "reject reason code (venue-specific; 0 = none)"),
            ),
            size=30,
            scoped=True,
        ),
        Layout(
            T.FILL,
            "An execution report: (part of) an order traded.",
            (
                _iid(),
                Field("client_order_id", U64, "from the OrderRequest"),
                Field("price", FIXED, "execution price"),
                Field("quantity", FIXED, "executed quantity, base units"),
                Field("fee", FIXED, "fee charged, quote currency (negative = rebate)"),
                Field("exchange_ts_ns", U64, "venue's execution time, Unix ns"),
                Field("fill_index", U32, "0 for an order's first fill, then 1, 2, ..."),
                Field("side", U8, "Side"),
                Field("liquidity", U8, "Liquidity: 0 unknown, 1 maker, 2 taker"),
            ),
            size=54,
            scoped=True,
        ),
        Layout(
            T.CANCEL,
            "Cancel an open order.",
            (
                _iid(),
                Field("client_order_id", U64, "order to cancel"),
                Field("strategy_id", U16, "strategy that owns the order"),
                Field("reason", U8, "0 strategy, 1 risk limit, 2 shutdown, 3 expired"),
                Field("flags", U8, "reserved flags, 0"),
                Pad(2),
            ),
            size=22,
            scoped=True,
        ),
        Layout(
            T.GAS_PRICE,
            "Gas price on a chain, from its latest block.",
            (
                Field("chain_id", U32, "EIP-155 chain id"),
                Field("block_number", U64, "block the figures come from"),
                Field("base_fee_wei", U64, "base fee per gas, wei"),
                Field("priority_fee_wei", U64, "suggested priority fee per gas, wei"),
                Field("block_utilization_bps", U16, "gas used / gas limit, bps"),
            ),
            size=30,
            scoped=False,
        ),
        # ---- system (80-99) ----------------------------------------------------------------
        Layout(
            T.HEARTBEAT,
            "Liveness from a node; also tells idle subscribers the last sequence it sent.",
            (
                Field("epoch", U64, "changes when the node restarts (sequences restart too)"),
                Field("last_sequence", U64, "sequence of the last data message this source sent"),
                Field("uptime_ns", U64, "time since the node started"),
                Field("interval_ms", U32, "heartbeat period; silence for 3 periods = down"),
            ),
            size=28,
            scoped=False,
        ),
        Layout(
            T.STATUS_REPORT,
            "A node's counters and state, plus free-form detail text.",
            (
                Field("uptime_ns", U64, "time since the node started"),
                Field("received", U64, "messages received"),
                Field("sent", U64, "messages sent"),
                Field("dropped", U64, "messages dropped (overflow, filters excluded)"),
                Field("errors", U64, "errors counted (malformed frames, failed parses)"),
                Field("state", U8, "NodeState: 0 starting, 1 running, 2 degraded, 3 stopping"),
            ),
            (Text("detail", "free-form detail, e.g. JSON; may be empty"),),
            scoped=False,
        ),
        Layout(
            T.INSTRUMENT_MAPPING,
            "Names an instrument id: its canonical descriptor (`Instrument.canonical`).",
            (_iid(),),
            (Text("canonical", "canonical descriptor, e.g. `spot|coinbase|BTC|USD`"),),
            scoped=True,
        ),
        Layout(
            T.SUBSCRIBE,
            "A subscriber's hello: its filter (which TLV types and instruments; empty = all), the "
            "overflow policy and queue limit the publisher applies to it, and its name for counters.",
            (
                Field("overflow", U8, "policy when its queue is full: 0 block, 1 drop_oldest, 2 disconnect"),
                Field("queue", U32, "queue limit in messages"),
                Count("n_types", U8, "types"),
                Count("n_instruments", U16, "instrument_ids"),
            ),
            (
                Array("types", (("type", U8),), "wanted TLV types; none = every type"),
                Array("instrument_ids", (("instrument_id", U64),), "wanted instruments; none: all"),
                Text("subscriber", "the subscribing node's name (for per-subscriber counters)"),
            ),
            scoped=False,
        ),
        Layout(
            T.RESEND_REQUEST,
            "Ask a node to resend a sequence range of one source (inclusive).",
            (
                Field("source", U16, "source whose messages are missing"),
                Field("first_sequence", U64, "first missing sequence"),
                Field("last_sequence", U64, "last missing sequence"),
            ),
            size=18,
            scoped=False,
        ),
        Layout(
            T.RESEND_UNAVAILABLE,
            "The answer when a resend cannot be served: the range is no longer buffered.",
            (
                Field("source", U16, "source asked about"),
                Field("first_sequence", U64, "first sequence requested"),
                Field("last_sequence", U64, "last sequence requested"),
                Field("oldest_available", U64, "oldest sequence still buffered (0 = none)"),
            ),
            size=26,
            scoped=False,
        ),
        Layout(
            T.SNAPSHOT_REQUEST,
            "Ask for current state (books, pool states) instead of a resend.",
            (
                Field("source", U16, "source whose state is wanted"),
                Field("instrument_id", U64, "instrument wanted (0 = all)"),
            ),
            size=10,
            scoped=False,
        ),
        Layout(
            T.SNAPSHOT_COMPLETE,
            "Ends a snapshot: the state sent is consistent with `sequence`; resume after it.",
            (
                Field("source", U16, "source the snapshot describes"),
                Field("instrument_id", U64, "instrument covered (0 = all)"),
                Field("sequence", U64, "source sequence the snapshot is consistent with"),
            ),
            size=18,
            scoped=False,
        ),
        Layout(
            T.PEER_INTRODUCTION,
            "A relay whose `delivery` is `peer`, answering a Subscribe: take this publisher's frames "
            "from its own socket. One record per publisher, all in one message: the set is complete, "
            "and a later message replaces it.",
            (
                Field("publishers", U16, "how many records the message holds (the relay's publishers)"),
                Count("n_types", U8, "types"),
                Count("n_instruments", U16, "instrument_ids"),
                Count("name_size", U8, "publisher"),
            ),
            (
                Array("types", (("type", U8),), "the relay's filter on this publisher's types; none = every type"),
                Array("instrument_ids", (("instrument_id", U64),), "the relay's instrument filter; none: all"),
                Blob("publisher", "the publishing node's name, UTF-8"),
                Text("socket", "path of the publisher's Unix socket"),
            ),
            scoped=False,
        ),
        Layout(
            T.SEQUENCE_HEAD,
            "A publisher's answer to a Subscribe, one record per source it has published: the "
            "sequence of the newest, so a subscriber that resumes or reconnects learns at once what "
            "it missed (and asks for it, or counts it lost), even from a source that has gone quiet since.",
            (
                Field("source", U16, "source"),
                Field("sequence", U64, "sequence of the newest frame of that source the publisher published"),
            ),
            size=10,
            scoped=False,
        ),
    )
}

assert set(LAYOUTS) == set(TLVType), "every TLVType needs a row in LAYOUTS"

Trade = LAYOUTS[T.TRADE].record
Quote = LAYOUTS[T.QUOTE].record
OrderBook = LAYOUTS[T.ORDER_BOOK].record
PoolSwap = LAYOUTS[T.POOL_SWAP].record
PoolMint = LAYOUTS[T.POOL_MINT].record
PoolBurn = LAYOUTS[T.POOL_BURN].record
OrderBookDelta = LAYOUTS[T.ORDER_BOOK_DELTA].record
Bar = LAYOUTS[T.BAR].record
EvmLog = LAYOUTS[T.EVM_LOG].record
PoolEventRetraction = LAYOUTS[T.POOL_EVENT_RETRACTION].record
PoolSync = LAYOUTS[T.POOL_SYNC].record
SignalIdentity = LAYOUTS[T.SIGNAL_IDENTITY].record
ArbitrageSignal = LAYOUTS[T.ARBITRAGE_SIGNAL].record
MomentumSignal = LAYOUTS[T.MOMENTUM_SIGNAL].record
LiquidationAlert = LAYOUTS[T.LIQUIDATION_ALERT].record
OrderRequest = LAYOUTS[T.ORDER_REQUEST].record
OrderAck = LAYOUTS[T.ORDER_ACK].record
Fill = LAYOUTS[T.FILL].record
Cancel = LAYOUTS[T.CANCEL].record
GasPrice = LAYOUTS[T.GAS_PRICE].record
Heartbeat = LAYOUTS[T.HEARTBEAT].record
StatusReport = LAYOUTS[T.STATUS_REPORT].record
InstrumentMapping = LAYOUTS[T.INSTRUMENT_MAPPING].record
Subscribe = LAYOUTS[T.SUBSCRIBE].record
ResendRequest = LAYOUTS[T.RESEND_REQUEST].record
ResendUnavailable = LAYOUTS[T.RESEND_UNAVAILABLE].record
SnapshotRequest = LAYOUTS[T.SNAPSHOT_REQUEST].record
SnapshotComplete = LAYOUTS[T.SNAPSHOT_COMPLETE].record
PeerIntroduction = LAYOUTS[T.PEER_INTRODUCTION].record
SequenceHead = LAYOUTS[T.SEQUENCE_HEAD].record

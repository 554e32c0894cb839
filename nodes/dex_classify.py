"""``transform.dex_classify``: classify EVM logs by event signature into pool events.

The sans-IO core comes first and touches no socket, clock or RPC: ``EVENTS`` is the table
(topic0 → what the event is and how its ABI data decodes), each decoder is a pure function of a
log's topics and data, and :class:`Classifier` turns one ``EvmLog`` record into the TLVs to
publish. The node at the bottom only feeds it the EvmLog TLVs of its input blocks.

Why by topic0 and not by DEX: QuickSwap, SushiSwap and friends are UniswapV2 forks with the same
event ABI, so the signature says how to decode; the DEX brand would cost a ``factory()`` RPC per
pool and add nothing to the decoding.

Decoding is exact: every ABI word is read with ``int.from_bytes`` (big-endian, two's complement
for ``int*``) and checked against its declared width, so an ``int24`` that does not fit, an
address with dirty upper bytes or a short data field is a malformed log (counted, never
published), not a silently wrong number. Amounts stay raw integers (u256 on the wire) next to
their tokens' decimals.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio
import yaml

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    HEADER_SIZE,
    EvmLog,
    MalformedFrame,
    PoolBurn,
    PoolEventRetraction,
    PoolMint,
    PoolProtocol,
    PoolSwap,
    PoolSync,
    TLVType,
    encode_tlv,
    iter_tlvs,
    layout_for,
    mapping_for,
    pool,
)
from alphapulse.runtime import NodeConfigError

# -- ABI words -------------------------------------------------------------------------------------

WORD = 32
_ZERO12 = bytes(12)


class BadLog(ValueError):
    """A log whose topic0 we know but whose topics/data do not fit that event's ABI."""


class Degenerate(ValueError):
    """A well-formed swap with no direction (both legs in, both out, or nothing moved)."""


def _uint(word: bytes, bits: int, what: str) -> int:
    value = int.from_bytes(word, "big")
    if value >> bits:
        raise BadLog(f"{what} does not fit uint{bits}")
    return value


def _int(word: bytes, bits: int, what: str) -> int:
    value = int.from_bytes(word, "big", signed=True)
    half = 1 << (bits - 1)
    if not -half <= value < half:
        raise BadLog(f"{what} does not fit int{bits}")
    return value


def _address(word: bytes, what: str) -> bytes:
    if word[:12] != _ZERO12:
        raise BadLog(f"{what} is not an address (upper 12 bytes not zero)")
    return word[12:]


def _words(data: bytes, n: int) -> list[bytes]:
    if len(data) != n * WORD:
        raise BadLog(f"data is {len(data)} bytes, the event has {n} words ({n * WORD} bytes)")
    return [data[i : i + WORD] for i in range(0, n * WORD, WORD)]


# -- pool metadata ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PoolMeta:
    """A pool's tokens in pool order (V2/V3: token0, token1; Curve: coins 0..n-1) and decimals.

    Without metadata a token is named by a placeholder address holding its pool-local index
    (``0x00…00`` = token0 / coin 0, ``0x00…01`` = token1 / coin 1), and its decimals are 0,
    which means *unknown*: the raw amount is exact, its scale is not known here.
    """

    tokens: tuple[bytes, ...] = ()
    decimals: tuple[int, ...] = ()

    def token(self, index: int) -> tuple[bytes, int]:
        if index < len(self.tokens):
            return self.tokens[index], self.decimals[index]
        return placeholder_token(index), 0


NO_METADATA = PoolMeta()


def placeholder_token(index: int) -> bytes:
    """The 20-byte stand-in for token ``index`` of a pool without metadata (not a real token:
    addresses below 0x100 are precompiles or unused)."""
    return index.to_bytes(20, "big")


class PoolsFileError(ValueError):
    """The pool metadata file cannot be used; raised at load, with the file and the pool."""


def parse_pools(doc: Any, where: str = "pools file") -> dict[bytes, PoolMeta]:
    """Pool metadata from a loaded JSON/YAML document::

        pools:
          "0x45dda9cb7c25131df268515131f647d726f50608":   # address of the pool
            tokens: ["0x2791...", "0x7ceb..."]            # token0, token1 (Curve: coins in order)
            decimals: [6, 18]
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("pools"), Mapping):
        raise PoolsFileError(f"{where}: expected a mapping with a 'pools' mapping")
    out: dict[bytes, PoolMeta] = {}
    for address, entry in doc["pools"].items():
        here = f"{where}: pool {address}"
        pool_address = _hex_address(address, here)
        if not isinstance(entry, Mapping):
            raise PoolsFileError(f"{here}: expected a mapping with 'tokens' and 'decimals'")
        tokens = entry.get("tokens")
        decimals = entry.get("decimals")
        if not isinstance(tokens, list) or not isinstance(decimals, list) or len(tokens) != len(decimals):
            raise PoolsFileError(f"{here}: 'tokens' and 'decimals' must be lists of the same length")
        if not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 255 for d in decimals):
            raise PoolsFileError(f"{here}: decimals must be integers 0-255 (0 = unknown)")
        out[pool_address] = PoolMeta(tuple(_hex_address(t, here) for t in tokens), tuple(decimals))
    return out


def load_pools(path: str) -> dict[bytes, PoolMeta]:
    """Read the pool metadata file once, at start (never on the hot path)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)  # YAML is a superset of JSON: one loader for both
    except (OSError, yaml.YAMLError) as exc:
        raise PoolsFileError(f"cannot read pools file {path}: {exc}") from None
    return parse_pools(doc, path)


def _hex_address(text: Any, where: str) -> bytes:
    if not isinstance(text, str) or len(text) != 42 or not text.startswith("0x"):
        raise PoolsFileError(f"{where}: {text!r} is not a 0x-prefixed 20-byte address")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise PoolsFileError(f"{where}: {text!r} is not hex") from None


# -- decoders: (topics, data, meta, event fields) -> record ------------------------------------------

Head = tuple[int, int, bytes, int]
"""(instrument_id, block_number, tx_hash, log_index): what every pool event starts with."""


def _direction(delta0: int, delta1: int) -> tuple[int, int, int, int]:
    """(index_in, index_out, amount_in, amount_out) from the pool's signed balance changes."""
    if delta0 > 0 >= delta1:
        return 0, 1, delta0, -delta1
    if delta1 > 0 >= delta0:
        return 1, 0, delta1, -delta0
    raise Degenerate(f"swap moves ({delta0}, {delta1}): no single direction")


def _swap(head: Head, proto: PoolProtocol, meta: PoolMeta, i_in: int, i_out: int, amount_in: int,
          amount_out: int, sqrt_price_x96: int = 0, liquidity: int = 0, tick: int = 0) -> Any:
    token_in, decimals_in = meta.token(i_in)
    token_out, decimals_out = meta.token(i_out)
    return PoolSwap(*head, proto, decimals_in, decimals_out, token_in, token_out, amount_in, amount_out,
                    sqrt_price_x96, liquidity, tick)


def decode_v2_swap(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Swap(address indexed sender, uint256 amount0In, uint256 amount1In, uint256 amount0Out,
    uint256 amount1Out, address indexed to); the direction is the pool's net balance change."""
    w = _words(data, 4)
    a0_in, a1_in, a0_out, a1_out = (int.from_bytes(x, "big") for x in w)
    i_in, i_out, amount_in, amount_out = _direction(a0_in - a0_out, a1_in - a1_out)
    return _swap(head, PoolProtocol.UNISWAP_V2, meta, i_in, i_out, amount_in, amount_out)


def decode_v3_swap(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1,
    uint160 sqrtPriceX96, uint128 liquidity, int24 tick); amounts are the pool's deltas."""
    w = _words(data, 5)
    amount0 = int.from_bytes(w[0], "big", signed=True)
    amount1 = int.from_bytes(w[1], "big", signed=True)
    sqrt_price = _uint(w[2], 160, "sqrtPriceX96")
    liquidity = _uint(w[3], 128, "liquidity")
    tick = _int(w[4], 24, "tick")
    i_in, i_out, amount_in, amount_out = _direction(amount0, amount1)
    return _swap(head, PoolProtocol.UNISWAP_V3, meta, i_in, i_out, amount_in, amount_out,
                 sqrt_price, liquidity, tick)


MAX_COINS = 256
"""Curve coin indexes at or above this are malformed (real pools have at most 8 coins)."""


def _curve(head: Head, data: bytes, meta: PoolMeta, signed_ids: bool) -> Any:
    w = _words(data, 4)
    read_id = (lambda x, what: _int(x, 128, what)) if signed_ids else (lambda x, what: _uint(x, 256, what))
    sold_id, bought_id = read_id(w[0], "sold_id"), read_id(w[2], "bought_id")
    if not (0 <= sold_id < MAX_COINS and 0 <= bought_id < MAX_COINS):
        raise BadLog(f"coin index out of range: sold {sold_id}, bought {bought_id}")
    return _swap(head, PoolProtocol.CURVE, meta, sold_id, bought_id,
                 int.from_bytes(w[1], "big"), int.from_bytes(w[3], "big"))


def decode_curve_exchange(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """TokenExchange(address indexed buyer, int128 sold_id, uint256 tokens_sold, int128 bought_id,
    uint256 tokens_bought): StableSwap pools."""
    return _curve(head, data, meta, signed_ids=True)


def decode_curve_exchange_u256(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """TokenExchange(address indexed buyer, uint256 sold_id, uint256 tokens_sold, uint256 bought_id,
    uint256 tokens_bought): CryptoSwap pools."""
    return _curve(head, data, meta, signed_ids=False)


def _pool_sync(head: Head, proto: PoolProtocol, meta: PoolMeta, reserve0: int, reserve1: int,
               sqrt_price_x96: int = 0, liquidity: int = 0, tick: int = 0) -> Any:
    token0, decimals0 = meta.token(0)
    token1, decimals1 = meta.token(1)
    return PoolSync(*head, proto, decimals0, decimals1, token0, token1, reserve0, reserve1,
                    sqrt_price_x96, liquidity, tick)


def decode_v2_sync(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Sync(uint112 reserve0, uint112 reserve1): the pair's reserves after the event."""
    w = _words(data, 2)
    return _pool_sync(head, PoolProtocol.UNISWAP_V2, meta, _uint(w[0], 112, "reserve0"),
                      _uint(w[1], 112, "reserve1"))


def _liquidity_event(record: type, head: Head, proto: PoolProtocol, meta: PoolMeta, owner: bytes,
                     amount0: int, amount1: int, liquidity: int = 0, tick_lower: int = 0,
                     tick_upper: int = 0) -> Any:
    token0, decimals0 = meta.token(0)
    token1, decimals1 = meta.token(1)
    return record(*head, proto, decimals0, decimals1, owner, token0, token1, amount0, amount1,
                  liquidity, tick_lower, tick_upper)


def decode_v2_mint(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Mint(address indexed sender, uint256 amount0, uint256 amount1). The event does not name
    the LP (the LP-token Transfer does); owner is ``sender``, usually the router; liquidity 0."""
    w = _words(data, 2)
    return _liquidity_event(PoolMint, head, PoolProtocol.UNISWAP_V2, meta, _address(topics[1], "sender"),
                            int.from_bytes(w[0], "big"), int.from_bytes(w[1], "big"))


def decode_v2_burn(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Burn(address indexed sender, uint256 amount0, uint256 amount1, address indexed to);
    owner is ``to``, who receives the tokens; liquidity 0 (not in the event)."""
    w = _words(data, 2)
    return _liquidity_event(PoolBurn, head, PoolProtocol.UNISWAP_V2, meta, _address(topics[2], "to"),
                            int.from_bytes(w[0], "big"), int.from_bytes(w[1], "big"))


def decode_v3_mint(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Mint(address sender, address indexed owner, int24 indexed tickLower, int24 indexed tickUpper,
    uint128 amount, uint256 amount0, uint256 amount1)."""
    w = _words(data, 4)
    _address(w[0], "sender")
    return _liquidity_event(PoolMint, head, PoolProtocol.UNISWAP_V3, meta, _address(topics[1], "owner"),
                            int.from_bytes(w[2], "big"), int.from_bytes(w[3], "big"),
                            _uint(w[1], 128, "amount"), _int(topics[2], 24, "tickLower"),
                            _int(topics[3], 24, "tickUpper"))


def decode_v3_burn(head: Head, topics: tuple[bytes, ...], data: bytes, meta: PoolMeta) -> Any:
    """Burn(address indexed owner, int24 indexed tickLower, int24 indexed tickUpper, uint128 amount,
    uint256 amount0, uint256 amount1)."""
    w = _words(data, 3)
    return _liquidity_event(PoolBurn, head, PoolProtocol.UNISWAP_V3, meta, _address(topics[1], "owner"),
                            int.from_bytes(w[1], "big"), int.from_bytes(w[2], "big"),
                            _uint(w[0], 128, "amount"), _int(topics[2], 24, "tickLower"),
                            _int(topics[3], 24, "tickUpper"))


# -- THE table -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EventSpec:
    """One known event: its canonical ABI signature (keccak-256 of it is topic0), what it becomes."""

    name: str
    signature: str
    family: str
    """``swap``, ``mint``, ``burn`` or ``sync``: what the ``events`` param selects."""
    tlv_type: TLVType
    n_topics: int
    """topic0 plus the indexed parameters; a log with another count is a different ABI."""
    decode: Callable[[Head, tuple[bytes, ...], bytes, PoolMeta], Any]


def _row(topic0: str, *args: Any) -> tuple[bytes, EventSpec]:
    return bytes.fromhex(topic0.removeprefix("0x")), EventSpec(*args)


EVENTS: dict[bytes, EventSpec] = dict(
    (
        _row("0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822", "UniswapV2.Swap",
             "Swap(address,uint256,uint256,uint256,uint256,address)", "swap", TLVType.POOL_SWAP, 3,
             decode_v2_swap),
        _row("0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67", "UniswapV3.Swap",
             "Swap(address,address,int256,int256,uint160,uint128,int24)", "swap", TLVType.POOL_SWAP, 3,
             decode_v3_swap),
        _row("0x8b3e96f2b889fa771c53c981b40daf005f63f637f1869f707052d15a3dd97140", "Curve.TokenExchange",
             "TokenExchange(address,int128,uint256,int128,uint256)", "swap", TLVType.POOL_SWAP, 2,
             decode_curve_exchange),
        _row("0xb2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98", "Curve.TokenExchangeU256",
             "TokenExchange(address,uint256,uint256,uint256,uint256)", "swap", TLVType.POOL_SWAP, 2,
             decode_curve_exchange_u256),
        _row("0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1", "UniswapV2.Sync",
             "Sync(uint112,uint112)", "sync", TLVType.POOL_SYNC, 1, decode_v2_sync),
        _row("0x4c209b5fc8ad50758f13e2e1088ba56a560dff690a1c6fef26394f4c03821c4f", "UniswapV2.Mint",
             "Mint(address,uint256,uint256)", "mint", TLVType.POOL_MINT, 2, decode_v2_mint),
        _row("0xdccd412f0b1252819cb1fd330b93224ca42612892bb3f4f789976e6d81936496", "UniswapV2.Burn",
             "Burn(address,uint256,uint256,address)", "burn", TLVType.POOL_BURN, 3, decode_v2_burn),
        _row("0x7a53080ba414158be7ec69b987b5fb7d07dee101fe85488f0853ae16239d0bde", "UniswapV3.Mint",
             "Mint(address,address,int24,int24,uint128,uint256,uint256)", "mint", TLVType.POOL_MINT, 4,
             decode_v3_mint),
        _row("0x0c396cd989a39f4459b5fa1aed6a9a8dcdbc45908acfd67e028cd568da98982c", "UniswapV3.Burn",
             "Burn(address,int24,int24,uint128,uint256,uint256)", "burn", TLVType.POOL_BURN, 4,
             decode_v3_burn),
    )
)
FAMILIES = ("swap", "mint", "burn", "sync")
MAX_UNKNOWN_TOPICS = 1024
"""Distinct unknown topic0s counted one by one; more are summed under ``"other"``."""


# -- the classifier (sans-IO) ----------------------------------------------------------------------------


class Classifier:
    """EvmLog records in, pool-event TLV records out; counts everything it does not publish.

    ``feed`` returns the records to publish for one log: an InstrumentMapping the first time a
    pool appears, then its PoolSwap / PoolMint / PoolBurn / PoolSync, or a PoolEventRetraction
    for a log the source marked ``removed`` (a reorg took it out of the chain).
    """

    def __init__(self, chain: str, *, families: Iterable[str] = FAMILIES,
                 pools: Mapping[bytes, PoolMeta] | None = None, counters: Counter[str] | None = None) -> None:
        self.chain = chain
        self.pools = dict(pools or {})
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.set_families(families)
        self.instruments: dict[bytes, Any] = {}
        """pool address -> Instrument, in order of first appearance (announced with a mapping)"""
        self._named: dict[bytes, tuple[Any, int]] = {}
        self.unknown: Counter[bytes] = Counter()
        """per topic0 (hex): logs of events this classifier does not decode"""
        self.classified: Counter[str] = Counter()
        self.state: dict[int, tuple[Any, PoolMeta]] = {}
        """instrument id -> the pool's latest state event (V2 PoolSync, V3 PoolSwap) and its metadata"""

    def set_families(self, families: Iterable[str]) -> None:
        wanted = frozenset(families)
        self.events = {topic: spec for topic, spec in EVENTS.items() if spec.family in wanted}

    def knows(self, topic0: bytes) -> bool:
        """Whether logs with this topic0 are decoded (else they are only counted)."""
        return topic0 in self.events

    def count_unknown(self, topic0: bytes) -> None:
        """Count a log this classifier does not decode, per topic0 (b"" = a log without topics)."""
        self.counters["unknown_signatures"] += 1
        unknown = self.unknown
        if topic0 in unknown or len(unknown) < MAX_UNKNOWN_TOPICS:
            unknown[topic0] += 1
        else:
            unknown[b"other"] += 1

    def instrument(self, address: bytes) -> tuple[Any, int]:
        """(Instrument, id) of the pool at ``address``, cached: the id is a BLAKE2b hash."""
        named = self._named.get(address)
        if named is None:
            instrument = pool(self.chain, "0x" + address.hex())
            named = self._named[address] = (instrument, instrument.id)
        return named

    def feed(self, log: Any) -> list[Any]:
        """The records to publish for one EvmLog. Raises BadLog (malformed for its known event)."""
        topics = log.topics
        spec = self.events.get(topics[0]) if topics else None
        if spec is None:
            self.count_unknown(topics[0] if topics else b"")
            return []
        if len(topics) != spec.n_topics:
            raise BadLog(f"{spec.name} has {spec.n_topics} topics, this log {len(topics)}")
        address = log.address
        instrument, iid = self.instrument(address)
        if log.instrument_id != iid:
            self.counters["chain_mismatch"] += 1  # the source names pools on another chain: ours wins
        head = (iid, log.block_number, log.tx_hash, log.log_index)
        meta = self.pools.get(address, NO_METADATA)
        try:
            record = spec.decode(head, topics, log.data, meta)
        except Degenerate:
            self.counters["degenerate_swaps"] += 1
            return []
        out: list[Any] = []
        if address not in self.instruments:
            self.instruments[address] = instrument
            out.append(mapping_for(instrument))
        if log.removed:
            self.counters["retractions"] += 1
            out.append(PoolEventRetraction(*head, int(spec.tlv_type)))
            return out
        self.classified[spec.name] += 1
        out.append(record)
        if spec.tlv_type is TLVType.POOL_SYNC or (
                spec.tlv_type is TLVType.POOL_SWAP and record.protocol == PoolProtocol.UNISWAP_V3):
            self.state[iid] = (record, meta)
        return out

    def snapshot(self, instrument_id: int = 0) -> list[Any]:
        """Names of the pools seen, then each pool's latest known state (V2 Sync, V3 from its last swap)."""
        out = [mapping_for(i) for i in self.instruments.values() if instrument_id in (0, i.id)]
        for iid, (record, meta) in self.state.items():
            if instrument_id not in (0, iid):
                continue
            if isinstance(record, PoolSwap):
                head = (iid, record.block_number, record.tx_hash, record.log_index)
                record = _pool_sync(head, PoolProtocol.UNISWAP_V3, meta, 0, 0, record.sqrt_price_x96,
                                    record.liquidity, record.tick)
            out.append(record)
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "classified": dict(sorted(self.classified.items())),
            "unknown_by_topic0": {(t.hex() or "none") if t != b"other" else "other": n
                                  for t, n in self.unknown.most_common()},
            "pools": len(self.instruments),
            "pools_with_metadata": len(self.pools),
        }




# -- reading EvmLog values ---------------------------------------------------------------------------------


def _head_offsets(layout: Any) -> dict[str, int]:
    """Byte offset of each named head item, from the layout table (never written down here)."""
    out: dict[str, int] = {}
    offset = 0
    for item in layout.head:
        name = getattr(item, "name", None)
        if name is not None:
            out[name] = offset
        offset += item.kind.size if hasattr(item, "kind") else item.size
    assert offset == layout.head_size
    return out


_EVM_LOG = layout_for(TLVType.EVM_LOG)
_N_TOPICS_AT = _head_offsets(_EVM_LOG)["n_topics"]
_TOPICS_AT = _EVM_LOG.head_size
_EVM_HEAD = _EVM_LOG.head_struct
_HEAD_NAMES = [item.name for item in _EVM_LOG.head if hasattr(item, "name")]
_I_N_TOPICS, _I_DATA_LENGTH = _HEAD_NAMES.index("n_topics"), _HEAD_NAMES.index("data_length")
_I_FIELDS = [i for i, name in enumerate(_HEAD_NAMES) if i not in (_I_N_TOPICS, _I_DATA_LENGTH)]
assert [_HEAD_NAMES[i] for i in _I_FIELDS] + ["topics", "data"] == [f.name for f in dataclasses.fields(EvmLog)]


def read_evm_log(value: bytes | memoryview) -> Any:
    """An EvmLog TLV value as a record: ``protocol.decode`` for this one layout, with the topics
    sliced in one go (the generic decoder converts element by element; this is the hot path)."""
    n = len(value)
    if n < _TOPICS_AT:
        raise MalformedFrame(f"EvmLog value of {n} bytes < head {_TOPICS_AT}")
    raw = _EVM_HEAD.unpack_from(value)
    data_at = _TOPICS_AT + 32 * raw[_I_N_TOPICS]
    if data_at + raw[_I_DATA_LENGTH] != n:
        raise MalformedFrame("EvmLog topic and data counts do not match the value size")
    whole = bytes(value)
    topics = tuple([whole[i : i + 32] for i in range(_TOPICS_AT, data_at, 32)])
    return EvmLog(*[raw[i] for i in _I_FIELDS], topics, whole[data_at:])


def peek_topic0(value: bytes | memoryview) -> bytes:
    """topic0 of an EvmLog TLV value without decoding the rest (b"" for a log without topics), so
    the many logs the classifier does not decode cost one slice and one dict lookup. Raises
    MalformedFrame when the value is too short to hold what its head claims up to topic0."""
    if len(value) < _TOPICS_AT:
        raise MalformedFrame(f"EvmLog value of {len(value)} bytes < head {_TOPICS_AT}")
    if not value[_N_TOPICS_AT]:
        return b""
    if len(value) < _TOPICS_AT + 32:
        raise MalformedFrame("EvmLog value ends inside topic0")
    return bytes(value[_TOPICS_AT : _TOPICS_AT + 32])


# -- the node ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DexClassifyParams:
    chain: str = param("polygon", doc="Chain name used in pool instrument ids.",
                       pattern="^[a-z0-9_.]+$")
    pools_file: str | None = param(
        None, doc="Optional JSON or YAML file of pool metadata ({pools: {<pool address>: {tokens: [...], "
        "decimals: [...]}}}), read once at start; relative paths are relative to the topology file. "
        "Without an entry a pool's tokens are placeholders holding the token index and decimals are "
        "0 (unknown). Never queried over RPC.",
    )
    events: tuple[str, ...] = param(
        ("swap", "mint", "burn", "sync"), doc="Event families to decode; others are counted "
        "as unknown per topic0.", minItems=1, uniqueItems=True, live=True,
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

    Amounts keep native precision (uint256/int256, no floats). An EvmLog flagged ``removed`` (a
    reorg) becomes a PoolEventRetraction naming the event type it retracts; retractions from
    upstream pass through. Unknown signatures are counted per topic0 (``kind_stats``), not errors.
    """

    Params = DexClassifyParams

    def __init__(self, params: DexClassifyParams) -> None:
        super().__init__(params)
        pools: dict[bytes, PoolMeta] = {}
        if params.pools_file:
            try:
                pools = load_pools(os.path.expanduser(params.pools_file))
            except PoolsFileError as exc:
                raise NodeConfigError(str(exc)) from None
        self.classifier = Classifier(params.chain, families=params.events, pools=pools)

    def handle_block(self, block, ctx) -> None:
        """Every TLV of every frame: EvmLogs are classified, retractions forwarded, the rest ignored."""
        self.classifier.counters = ctx.counters
        for frame in block.frames():
            try:
                for tlv_type, value in iter_tlvs(frame[HEADER_SIZE:]):
                    if tlv_type == TLVType.EVM_LOG:
                        self._on_log(value, ctx)
                    elif tlv_type == TLVType.POOL_EVENT_RETRACTION:
                        ctx.message(encode_tlv(tlv_type, value))
                    else:
                        ctx.counters["ignored_tlvs"] += 1
            except MalformedFrame as exc:
                self._bad(ctx, "errors.malformed_tlv", exc)

    def _on_log(self, value: memoryview, ctx) -> None:
        ctx.counters["logs"] += 1
        try:
            topic0 = peek_topic0(value)
            if not self.classifier.knows(topic0):  # most logs: counted without decoding the rest
                self.classifier.count_unknown(topic0)
                return
            log = read_evm_log(value)
            records = self.classifier.feed(log)
        except (MalformedFrame, BadLog) as exc:
            self._bad(ctx, "errors.bad_log", exc)
            return
        for record in records:
            ctx.message(record)

    @staticmethod
    def _bad(ctx, counter: str, exc: Exception) -> None:
        ctx.counters[counter] += 1
        n = ctx.counters[counter]
        if n <= 10 or n % 1000 == 0:  # logged, but a flood of bad logs must not flood the log file
            ctx.log.warning("%s (#%d): %s", counter, n, exc)

    def snapshot(self, instrument_id: int):
        return self.classifier.snapshot(instrument_id)

    def reconfigure(self, params: DexClassifyParams) -> None:
        super().reconfigure(params)
        self.classifier.set_families(params.events)

    def statistics(self) -> dict:
        return self.classifier.statistics()

    async def run(self, ctx):
        await trio.sleep_forever()

"""The classification core of ``transform.dex_classify`` on real logs, checked by hand against the ABI."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from Crypto.Hash import keccak

import alphapulse.protocol as P
from nodes.dex_classify import (
    EVENTS,
    BadLog,
    Classifier,
    PoolMeta,
    PoolsFileError,
    load_pools,
    peek_topic0,
    placeholder_token,
    read_evm_log,
)
from nodes.evm_logs import parse_log
from tests.dex import polygon_csv_logs, polygon_filter_logs, polygon_receipt_logs, receipt_logs

V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
CURVE_EXCHANGE = "0x8b3e96f2b889fa771c53c981b40daf005f63f637f1869f707052d15a3dd97140"
CURVE_EXCHANGE_U256 = "0xb2e76ae99761dc136e598d4a629bb347eccb9532a5f8bbd72e18467c3c34cc98"
V2_SYNC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TOKEN0, TOKEN1 = placeholder_token(0), placeholder_token(1)


def keccak256(text: str) -> str:
    return "0x" + keccak.new(digest_bits=256, data=text.encode()).hexdigest()


def to_record(obj, chain="ethereum", chain_id=1):
    return parse_log(obj, chain_id, lambda address: P.pool(chain, "0x" + address.hex())).record


def find(logs, tx: str, log_index: int):
    (log,) = [x for x in logs if x["transactionHash"] == tx and int(x["logIndex"], 16) == log_index]
    return log


def classify_one(obj, chain="ethereum", **kwargs):
    records = Classifier(chain, **kwargs).feed(to_record(obj, chain))
    assert isinstance(records[0], P.InstrumentMapping)
    assert records[0].canonical == f"pool|{chain}|{obj['address']}"
    return records[1]


def head_of(obj, chain="ethereum"):
    return dict(instrument_id=P.pool(chain, obj["address"]).id, block_number=int(obj["blockNumber"], 16),
                tx_hash=bytes.fromhex(obj["transactionHash"][2:]), log_index=int(obj["logIndex"], 16))


# -- the table ------------------------------------------------------------------------------------------


def test_topic0_is_the_keccak_of_each_abi_signature():
    for topic, spec in EVENTS.items():
        assert keccak256(spec.signature) == "0x" + topic.hex(), spec.name


def test_the_required_signatures_are_pinned():
    assert keccak256("Swap(address,uint256,uint256,uint256,uint256,address)") == V2_SWAP
    assert keccak256("Swap(address,address,int256,int256,uint160,uint128,int24)") == V3_SWAP
    assert keccak256("TokenExchange(address,int128,uint256,int128,uint256)") == CURVE_EXCHANGE
    assert keccak256("TokenExchange(address,uint256,uint256,uint256,uint256)") == CURVE_EXCHANGE_U256
    assert keccak256("Sync(uint112,uint112)") == V2_SYNC
    names = {"0x" + t.hex(): s.name for t, s in EVENTS.items()}
    assert names[V2_SWAP] == "UniswapV2.Swap" and names[V3_SWAP] == "UniswapV3.Swap"
    assert names[CURVE_EXCHANGE] == "Curve.TokenExchange" and names[CURVE_EXCHANGE_U256] == "Curve.TokenExchangeU256"


# -- the Ethereum receipts ---------------------------------------------------------------------------------


def test_receipts_counts_per_class(shared_data):
    logs = receipt_logs(shared_data)
    classifier = Classifier("ethereum")
    out = [r for log in logs for r in classifier.feed(to_record(log))]
    stats = classifier.statistics()
    # the data README: 54 UniswapV2 Swaps, 15 UniswapV3 Swaps, Curve in both variants
    assert stats["classified"] == {
        "UniswapV2.Swap": 54, "UniswapV3.Swap": 15, "Curve.TokenExchange": 1, "Curve.TokenExchangeU256": 2,
        "UniswapV2.Sync": 55, "UniswapV2.Mint": 4,
    }
    kinds = Counter(type(r).__name__ for r in out)
    assert kinds["PoolSwap"] == 72 and kinds["PoolSync"] == 55 and kinds["PoolMint"] == 4
    assert kinds["InstrumentMapping"] == stats["pools"]
    topic0s = Counter(log["topics"][0] for log in logs if log["topics"])
    known = {"0x" + t.hex() for t in EVENTS}
    assert stats["unknown_by_topic0"] == {t[2:]: n for t, n in topic0s.items() if t not in known}
    assert stats["unknown_by_topic0"][TRANSFER[2:]] == 519
    assert classifier.counters["unknown_signatures"] == len(logs) - 131
    assert classifier.counters["degenerate_swaps"] == 0


def test_every_swap_matches_a_reference_decode_of_the_hex(shared_data):
    """An independent decode: int() of each 64-hex-digit word of the data string, by the ABI."""
    logs = receipt_logs(shared_data)
    classifier = Classifier("ethereum")
    checked = Counter()
    for log in logs:
        topic0 = log["topics"][0] if log["topics"] else None
        if topic0 not in (V2_SWAP, V3_SWAP, CURVE_EXCHANGE, CURVE_EXCHANGE_U256):
            continue
        words = [int(log["data"][2 + 64 * i: 66 + 64 * i], 16) for i in range((len(log["data"]) - 2) // 64)]
        (swap,) = [r for r in classifier.feed(to_record(log)) if isinstance(r, P.PoolSwap)]
        if topic0 == V2_SWAP:
            a0_in, a1_in, a0_out, a1_out = words
            zero_for_one = a0_in > a0_out
            expected = (a0_in - a0_out, a1_out - a1_in) if zero_for_one else (a1_in - a1_out, a0_out - a0_in)
            tokens = (TOKEN0, TOKEN1) if zero_for_one else (TOKEN1, TOKEN0)
        elif topic0 == V3_SWAP:
            amount0 = words[0] - (1 << 256) if words[0] >> 255 else words[0]
            amount1 = words[1] - (1 << 256) if words[1] >> 255 else words[1]
            expected = (amount0, -amount1) if amount0 > 0 else (amount1, -amount0)
            tokens = (TOKEN0, TOKEN1) if amount0 > 0 else (TOKEN1, TOKEN0)
            tick = words[4] - (1 << 256) if words[4] >> 255 else words[4]
            assert (swap.sqrt_price_x96, swap.liquidity, swap.tick) == (words[2], words[3], tick)
        else:
            sold_id, sold, bought_id, bought = words
            expected = (sold, bought)
            tokens = (placeholder_token(sold_id), placeholder_token(bought_id))
        assert (swap.amount_in, swap.amount_out) == expected
        assert (swap.token_in, swap.token_out) == tokens
        assert swap.amount_in > 0 and swap.amount_out >= 0
        assert (swap.decimals_in, swap.decimals_out) == (0, 0)  # no metadata: unknown
        assert {k: getattr(swap, k) for k in head_of(log)} == head_of(log)
        assert P.decode(P.TLVType.POOL_SWAP, P.encode(swap)[2:]) == swap  # fits the wire exactly
        checked[topic0] += 1
    assert sum(checked.values()) == 72


def test_uniswap_v3_swap_by_hand(shared_data):
    # tx 0x96b1…, log 2, pool 0x33f6…: data words
    #   amount0      0x…070bcfa24e63                  > 0: token0 paid into the pool
    #   amount1      0xff…ffe8883e64c392b3db          two's complement: -0x1777c19b3c6d4c25
    #   sqrtPriceX96 0x…01d2638ce8b1f0997b1fea3a59cd
    #   liquidity    0x…03b2aba2a022b5e9
    #   tick         0x…01e01a = 122906
    logs = receipt_logs(shared_data)
    tx = "0x96b19d57a1f9fd238c2418ddd208cfd5e7cbde84d8de87538f2de3b5f8b4fb5f"
    log = find(logs, tx, 2)
    swap = classify_one(log)
    assert swap == P.PoolSwap(
        **head_of(log), protocol=P.PoolProtocol.UNISWAP_V3, decimals_in=0, decimals_out=0,
        token_in=TOKEN0, token_out=TOKEN1, amount_in=0x070BCFA24E63, amount_out=0x1777C19B3C6D4C25,
        sqrt_price_x96=0x01D2638CE8B1F0997B1FEA3A59CD, liquidity=0x03B2ABA2A022B5E9, tick=122906,
    )
    assert 2**64 - 0xE8883E64C392B3DB == 0x1777C19B3C6D4C25
    # the same amounts move as ERC-20 Transfers in that transaction (logs 0 and 1)
    assert int(find(logs, tx, 0)["data"], 16) == swap.amount_out  # WETH out of the pool
    assert int(find(logs, tx, 1)["data"], 16) == swap.amount_in


def test_uniswap_v2_swap_and_sync_by_hand(shared_data):
    # tx 0x6258…, pool 0xd34d…: Sync (log 6) then Swap (log 7)
    #   Swap: amount0In 0, amount1In 0x02d8f059af41d888, amount0Out 0x0497d082b545a1f56ff19859, amount1Out 0
    #   Sync: reserve0 0x01c740bfce29484c3c8798215d, reserve1 0x011c3b6055f30e1aa8 (both < 2**112)
    logs = receipt_logs(shared_data)
    tx = "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a"
    swap = classify_one(find(logs, tx, 7))
    assert (swap.protocol, swap.token_in, swap.token_out) == (P.PoolProtocol.UNISWAP_V2, TOKEN1, TOKEN0)
    assert (swap.amount_in, swap.amount_out) == (0x02D8F059AF41D888, 0x0497D082B545A1F56FF19859)
    assert (swap.sqrt_price_x96, swap.liquidity, swap.tick) == (0, 0, 0)
    sync = classify_one(find(logs, tx, 6))
    assert sync == P.PoolSync(
        **head_of(find(logs, tx, 6)), protocol=P.PoolProtocol.UNISWAP_V2, decimals0=0, decimals1=0,
        token0=TOKEN0, token1=TOKEN1, reserve0=0x01C740BFCE29484C3C8798215D, reserve1=0x011C3B6055F30E1AA8,
        sqrt_price_x96=0, liquidity=0, tick=0,
    )


def test_curve_exchanges_by_hand(shared_data):
    logs = receipt_logs(shared_data)
    # int128 ids, 3pool 0xbebc…: sold_id 2 (USDT), 0x01d9b5c9 sold; bought_id 1 (USDC), 0x01d9b4ee bought
    swap = classify_one(find(logs, "0x22969cd8f9bc19baaf48ca3fdd74ce12700d6803f7f82707151f79b61c6ea382", 0x177))
    assert swap.protocol == P.PoolProtocol.CURVE
    assert (swap.token_in, swap.token_out) == (placeholder_token(2), placeholder_token(1))
    assert (swap.amount_in, swap.amount_out) == (31_045_065, 31_044_846)
    assert (0x01D9B5C9, 0x01D9B4EE) == (31_045_065, 31_044_846)
    # uint256 ids, one transaction through two pools: coin 1 → 0 in 0x8301…, then coin 0 → 1 in 0xb576…
    tx = "0x58efa853dd2191d4578d4ccd7a8b4812ecee8b6a3422db7568b15d8698058bf2"
    first, second = classify_one(find(logs, tx, 0x98)), classify_one(find(logs, tx, 0x9A))
    assert (first.token_in, first.token_out) == (TOKEN1, TOKEN0)
    assert (first.amount_in, first.amount_out) == (0x9E89AD3338F5212000, 0x1CE290B977803498)
    assert (second.token_in, second.token_out) == (TOKEN0, TOKEN1)
    assert (second.amount_in, second.amount_out) == (0x1CE290B977803498, 0x201DED7BAE70194B07)


def test_uniswap_v2_mint_by_hand(shared_data):
    # log 0x53, pool 0xc2f7…: sender = the UniswapV2 router (topic 1), amount0, amount1
    log = find(receipt_logs(shared_data), "0x2db0da77ffe6032045bcf103db1c529711d93947a90345e5e16fa79c2c46eeb0", 0x53)
    mint = classify_one(log)
    assert isinstance(mint, P.PoolMint)
    assert mint.owner == bytes.fromhex("7a250d5630b4cf539739df2c5dacb4c659f2488d")
    assert (mint.amount0, mint.amount1) == (0x0DD6C0057EDFC4B2, 0x087736D1A7A155)
    assert (mint.liquidity, mint.tick_lower, mint.tick_upper) == (0, 0, 0)


# -- Polygon ------------------------------------------------------------------------------------------------


def test_polygon_v3_swap_by_hand(shared_data):
    # pool 0xb1f3…, log 3: amount0 0xff…ffb83b7ebed1c84881 = -0x47c481412e37b77f (WMATIC out),
    # amount1 0x015bf26d45d535e38a in; sqrtPriceX96 0x0232d7376df340793b141192d1;
    # liquidity 0x5d32c9ed61c49e937938; tick 0x3d8d = 15757
    logs = polygon_receipt_logs(shared_data)
    (log,) = [x for x in logs if x["topics"][0] == V3_SWAP]
    swap = classify_one(log, "polygon")
    assert swap == P.PoolSwap(
        **head_of(log, "polygon"), protocol=P.PoolProtocol.UNISWAP_V3, decimals_in=0, decimals_out=0,
        token_in=TOKEN1, token_out=TOKEN0, amount_in=0x015BF26D45D535E38A, amount_out=0x47C481412E37B77F,
        sqrt_price_x96=0x0232D7376DF340793B141192D1, liquidity=0x5D32C9ED61C49E937938, tick=15757,
    )
    assert int(logs[0]["data"], 16) == swap.amount_out and int(logs[1]["data"], 16) == swap.amount_in


QUICKSWAP_POOL = "0x4a35582a710e1f4b2030a3f826da20bfb6703c09"
WETH = "0x7ceb23fd6bc0add59e62ac25578270cff1b9f619"
DAI = "0x8f3cf7ad23cd3cadbd9735aff958023239c6a063"


def test_quickswap_is_uniswap_v2_by_signature(shared_data):
    # CSV log 20: amount0In 0x06f05b59d3b20000 (0.5 WETH), amount1Out 0x40366d5c466b33c3ee (DAI)
    logs = polygon_csv_logs(shared_data)
    classifier = Classifier("polygon")
    out = [r for log in logs for r in classifier.feed(to_record(log, "polygon", 137))]
    (swap,) = [r for r in out if isinstance(r, P.PoolSwap)]
    (sync,) = [r for r in out if isinstance(r, P.PoolSync)]
    assert swap.protocol == P.PoolProtocol.UNISWAP_V2 and swap.log_index == 20
    assert (swap.token_in, swap.amount_in, swap.amount_out) == (TOKEN0, 500_000_000_000_000_000, 0x40366D5C466B33C3EE)
    assert (sync.reserve0, sync.reserve1) == (0x244B5C467452E77830, 0x0150A0AD468C9BC87895CB)
    assert swap.instrument_id == sync.instrument_id == P.pool("polygon", QUICKSWAP_POOL).id


def test_pool_metadata_enriches_tokens_and_decimals(shared_data, tmp_path):
    path = tmp_path / "pools.yaml"
    path.write_text(f'pools:\n  "{QUICKSWAP_POOL}": {{tokens: ["{WETH}", "{DAI}"], decimals: [18, 18]}}\n')
    classifier = Classifier("polygon", pools=load_pools(str(path)))
    out = [r for log in polygon_csv_logs(shared_data) for r in classifier.feed(to_record(log, "polygon", 137))]
    (swap,) = [r for r in out if isinstance(r, P.PoolSwap)]
    (sync,) = [r for r in out if isinstance(r, P.PoolSync)]
    assert (swap.token_in, swap.token_out) == (bytes.fromhex(WETH[2:]), bytes.fromhex(DAI[2:]))
    assert (swap.decimals_in, swap.decimals_out) == (18, 18)
    assert (sync.token0, sync.decimals0, sync.token1, sync.decimals1) == (
        bytes.fromhex(WETH[2:]), 18, bytes.fromhex(DAI[2:]), 18)


def test_pools_file_errors_name_the_pool(tmp_path):
    path = tmp_path / "pools.json"
    path.write_text('{"pools": {"0x' + "11" * 20 + '": {"tokens": ["0x' + "22" * 20 + '"], "decimals": [300]}}}')
    with pytest.raises(PoolsFileError, match=r"0x1111.*decimals must be integers"):
        load_pools(str(path))
    with pytest.raises(PoolsFileError, match="cannot read"):
        load_pools(str(tmp_path / "missing.yaml"))
    assert PoolMeta().token(3) == (placeholder_token(3), 0)


def test_transfer_only_logs_are_all_unknown(shared_data):
    logs = polygon_filter_logs(shared_data)
    classifier = Classifier("polygon")
    out = [r for log in logs for r in classifier.feed(to_record(log, "polygon", 137))]
    assert out == []
    assert classifier.statistics()["unknown_by_topic0"] == {TRANSFER[2:]: len(logs)}
    assert classifier.counters == Counter({"unknown_signatures": len(logs)})
    assert len(logs) == 14


def test_a_removed_log_retracts_the_event_it_produced(shared_data):
    logs = receipt_logs(shared_data)
    log = find(logs, "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a", 7)
    classifier = Classifier("ethereum")
    published = classifier.feed(to_record(log))
    retraction = classifier.feed(to_record({**log, "removed": True}))
    assert retraction == [P.PoolEventRetraction(**head_of(log), retracted_type=int(P.TLVType.POOL_SWAP))]
    assert published[1].instrument_id == retraction[0].instrument_id
    assert classifier.counters["retractions"] == 1
    sync = find(logs, "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a", 6)
    (sync_retraction,) = classifier.feed(to_record({**sync, "removed": True}))[-1:]
    assert sync_retraction.retracted_type == P.TLVType.POOL_SYNC


def test_event_families_not_selected_count_as_unknown(shared_data):
    logs = receipt_logs(shared_data)
    classifier = Classifier("ethereum", families=["swap"])
    out = [r for log in logs for r in classifier.feed(to_record(log))]
    assert not any(isinstance(r, P.PoolSync | P.PoolMint) for r in out)
    assert classifier.statistics()["unknown_by_topic0"][V2_SYNC[2:]] == 55


# -- malformed logs ------------------------------------------------------------------------------------------


def _with(log, **changes):
    return dataclasses.replace(log, **changes)


def test_malformed_logs_raise_badlog_and_publish_nothing(shared_data):
    logs = receipt_logs(shared_data)
    v3 = to_record(find(logs, "0x96b19d57a1f9fd238c2418ddd208cfd5e7cbde84d8de87538f2de3b5f8b4fb5f", 2))
    v2 = to_record(find(logs, "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a", 7))
    sync = to_record(find(logs, "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a", 6))
    mint = to_record(find(logs, "0x2db0da77ffe6032045bcf103db1c529711d93947a90345e5e16fa79c2c46eeb0", 0x53))
    bad_tick = v3.data[:128] + (1 << 23).to_bytes(32, "big")  # int24 max is 2**23 - 1
    cases = {
        "short data": _with(v2, data=v2.data[:-1]),
        "extra word": _with(v3, data=v3.data + bytes(32)),
        "topic count": _with(v2, topics=v2.topics[:2]),
        "tick overflow": _with(v3, data=bad_tick),
        "liquidity overflow": _with(v3, data=v3.data[:96] + (1 << 128).to_bytes(32, "big") + v3.data[128:]),
        "reserve overflow": _with(sync, data=(1 << 112).to_bytes(32, "big") + sync.data[32:]),
        "dirty address": _with(mint, topics=(mint.topics[0], b"\x01" + mint.topics[1][1:])),
    }
    for name, log in cases.items():
        classifier = Classifier("ethereum")
        with pytest.raises(BadLog):
            classifier.feed(log)
        assert classifier.instruments == {}, name  # no mapping announced for a log never published
    # the largest in-range values pass: exact, no rounding anywhere
    top = _with(v3, data=v3.data[:128] + ((1 << 256) - (1 << 23)).to_bytes(32, "big"))
    assert Classifier("ethereum").feed(top)[1].tick == -(1 << 23)


def test_a_swap_without_direction_is_counted_not_published(shared_data):
    logs = receipt_logs(shared_data)
    v2 = to_record(find(logs, "0x62588ad8887f77ae0b0dd6592d35f3d2234ae24b886950e98bcffc5cd708712a", 7))
    classifier = Classifier("ethereum")
    assert classifier.feed(_with(v2, data=bytes(128))) == []
    assert classifier.counters["degenerate_swaps"] == 1


# -- reading EvmLog values, snapshots -------------------------------------------------------------------------


def _value(record) -> bytes:
    raw = P.encode(record)
    return raw[5:] if raw[0] == P.EXTENDED_TLV_MARKER else raw[2:]


def test_the_fast_evm_log_reader_agrees_with_the_protocol_decoder(shared_data):
    logs = receipt_logs(shared_data) + polygon_filter_logs(shared_data)
    for log in logs:
        record = to_record(log)
        value = _value(record)
        assert read_evm_log(value) == P.decode(P.TLVType.EVM_LOG, value) == record
        assert peek_topic0(value) == (record.topics[0] if record.topics else b"")
    no_topics = dataclasses.replace(record, topics=(), data=record.topics[0])  # data that looks like a topic
    assert peek_topic0(_value(no_topics)) == b"" and read_evm_log(_value(no_topics)) == no_topics
    for bad in (value[:50], value[:-1], value + b"\0"):
        with pytest.raises(P.MalformedFrame):
            read_evm_log(bad)
    for bad in (value[:50], value[:100]):
        with pytest.raises(P.MalformedFrame):
            peek_topic0(bad)


def test_snapshot_names_pools_and_gives_their_latest_state(shared_data):
    logs = receipt_logs(shared_data)
    classifier = Classifier("ethereum")
    for log in logs:
        classifier.feed(to_record(log))
    snapshot = classifier.snapshot()
    mappings = [r for r in snapshot if isinstance(r, P.InstrumentMapping)]
    states = [r for r in snapshot if isinstance(r, P.PoolSync)]
    assert len(mappings) == classifier.statistics()["pools"] and len(snapshot) == len(mappings) + len(states)
    v3 = P.pool("ethereum", "0x33f6e97ea6f5dfa6691176b33ad5677e08fb6b38").id
    (state,) = classifier.snapshot(v3)[1:]
    assert state.protocol == P.PoolProtocol.UNISWAP_V3 and state.reserve0 == state.reserve1 == 0
    last_swap = [r for log in logs if log["address"] == "0x33f6e97ea6f5dfa6691176b33ad5677e08fb6b38"
                 for r in Classifier("ethereum").feed(to_record(log)) if isinstance(r, P.PoolSwap)][-1]
    assert (state.sqrt_price_x96, state.liquidity, state.tick) == (
        last_swap.sqrt_price_x96, last_swap.liquidity, last_swap.tick)

"""The sans-IO core of ``source.evm_logs``: parsing, de-duplication, confirmations, backfill, reorgs."""

from __future__ import annotations

import dataclasses

import pytest

import alphapulse.protocol as P
from nodes.evm_logs import MAX_DATA, Backfill, BadLog, EvmLogs, EvmLogsParams, LogStream, parse_log
from tests.dex import as_blocks, block_hash, receipt_logs

FIRST = 1001


@pytest.fixture
def blocks(shared_data):
    return as_blocks(receipt_logs(shared_data), FIRST, 4)


def evm_logs(records):
    return [r for r in records if isinstance(r, P.EvmLog)]


def keys(records):
    return [(r.block_number, r.tx_hash, r.log_index, r.removed) for r in evm_logs(records)]


def test_parse_log_keeps_every_field_exactly(shared_data):
    log = receipt_logs(shared_data)[2]
    parsed = parse_log(log, 1, lambda a: P.pool("ethereum", "0x" + a.hex()))
    record = parsed.record
    assert record.instrument_id == P.pool("ethereum", log["address"]).id
    assert (record.chain_id, record.block_number, record.log_index, record.removed) == (1, 15573637, 2, 0)
    assert "0x" + record.tx_hash.hex() == log["transactionHash"]
    assert ["0x" + t.hex() for t in record.topics] == log["topics"]
    assert "0x" + record.data.hex() == log["data"]
    assert parsed.key == (bytes.fromhex(log["blockHash"][2:]), record.tx_hash, 2)
    raw = P.encode(record)
    assert P.decode(P.TLVType.EVM_LOG, raw[2:] if raw[0] != 255 else raw[5:]) == record


@pytest.mark.parametrize("change", [
    {"blockNumber": None},  # a pending log
    {"address": "0x1234"},
    {"data": "0xzz"},
    {"data": "deadbeef"},
    {"topics": ["0x" + "00" * 32] * 5},
    {"topics": ["0x" + "00" * 31]},
    {"logIndex": "12"},
    {"removed": "yes"},
    {"data": "0x" + "00" * (MAX_DATA + 1)},
])
def test_malformed_logs_raise_badlog(shared_data, change):
    log = {**receipt_logs(shared_data)[2], **change}
    with pytest.raises(BadLog):
        parse_log(log, 1, lambda a: P.pool("ethereum", "0x" + a.hex()))
    with pytest.raises(BadLog):
        parse_log({k: v for k, v in log.items() if k != "transactionHash"}, 1, lambda a: None)
    with pytest.raises(BadLog):
        parse_log([log], 1, lambda a: None)


def test_live_logs_are_published_once_with_a_mapping_per_contract(blocks):
    stream = LogStream("ethereum", 1)
    assert stream.backfill_range(FIRST - 1) is None  # first connect: start live
    out = [r for log in blocks[FIRST] for r in stream.on_log(log)]
    again = [r for log in blocks[FIRST] for r in stream.on_log(log)]
    assert len(evm_logs(out)) == len(blocks[FIRST]) and again == []
    assert stream.counters["duplicates"] == len(blocks[FIRST])
    mappings = [r for r in out if isinstance(r, P.InstrumentMapping)]
    assert len(mappings) == len({log["address"] for log in blocks[FIRST]})
    first_seen = {}
    for i, r in enumerate(out):  # each contract is named before its first log
        if isinstance(r, P.InstrumentMapping):
            first_seen[r.instrument_id] = i
        else:
            assert first_seen[r.instrument_id] < i


def test_removed_log_is_retracted_once_and_then_may_come_back(blocks):
    stream = LogStream("ethereum", 1)
    log = blocks[FIRST][0]
    stream.on_log(log)
    (retraction,) = stream.on_log({**log, "removed": True})
    assert retraction.removed == 1 and retraction.tx_hash.hex() == log["transactionHash"][2:]
    assert stream.on_log({**log, "removed": True}) == []  # nothing left to retract
    assert stream.counters["reorg.retracted"] == 1 and stream.counters["reorg.removed_unseen"] == 1
    # re-included in a block of another hash at the same height: a new log, published again
    moved = {**log, "blockHash": block_hash(FIRST, fork="b")}
    assert [r.removed for r in evm_logs(stream.on_log(moved))] == [0]


def test_confirmations_hold_logs_until_the_head_is_deep_enough(blocks):
    stream = LogStream("ethereum", 1, confirmations=2)
    stream.backfill_range(FIRST - 1)
    assert [r for log in blocks[FIRST] for r in stream.on_log(log)] == []
    assert evm_logs(stream.on_head(FIRST + 1)) == []
    dropped = blocks[FIRST][0]
    assert stream.on_log({**dropped, "removed": True}) == []  # unconfirmed: dropped, nothing to retract
    released = evm_logs(stream.on_head(FIRST + 2))
    assert len(released) == len(blocks[FIRST]) - 1
    assert [r.log_index for r in released] == sorted(r.log_index for r in released)
    assert stream.counters["reorg.unconfirmed_dropped"] == 1


def test_backfill_range_starts_at_the_last_block_seen_minus_confirmations():
    stream = LogStream("ethereum", 1, confirmations=3, max_backfill_blocks=100)
    stream.on_head(499)  # a notification that arrived before the first head was read
    assert stream.backfill_range(500) is None  # the first connect starts live, whatever came first
    stream.on_head(510)
    assert stream.backfill_range(520) == Backfill(507, 520)
    assert stream.backfill_range(700) == Backfill(601, 700, skipped=94)  # keeps the newest 100 blocks
    assert stream.counters["dropped.backfill_blocks"] == 94


def test_backfill_fills_the_hole_once_and_retracts_what_the_chain_lost(blocks):
    stream = LogStream("ethereum", 1)
    stream.backfill_range(FIRST - 1)
    live = [r for log in blocks[FIRST] for r in stream.on_log(log)]
    stream.on_head(FIRST)
    # disconnected: blocks FIRST+1, FIRST+2 were mined; meanwhile FIRST lost its last tx to a reorg
    lost = blocks[FIRST][-1]
    chain_now = [x for x in blocks[FIRST] if x["transactionHash"] != lost["transactionHash"]]
    chain_now += blocks[FIRST + 1] + blocks[FIRST + 2]
    span = stream.backfill_range(FIRST + 2)
    assert span == Backfill(FIRST, FIRST + 2)
    out = stream.on_backfill(span.first, span.last, chain_now, stream.known_keys(span.first, span.last))
    added = [k for k in keys(out) if not k[3]]
    retracted = [k for k in keys(out) if k[3]]
    assert len(added) == len(blocks[FIRST + 1]) + len(blocks[FIRST + 2])
    lost_n = sum(1 for x in blocks[FIRST] if x["transactionHash"] == lost["transactionHash"])
    assert len(retracted) == lost_n and {k[1].hex() for k in retracted} == {lost["transactionHash"][2:]}
    every = [k[:3] for k in keys(live) + added]
    assert len(every) == len(set(every))  # each log published exactly once
    assert stream.seen == FIRST + 2 and stream.counters["reorg.retracted_by_backfill"] == lost_n


def test_old_blocks_are_forgotten(blocks):
    stream = LogStream("ethereum", 1, retain_blocks=10)
    stream.backfill_range(FIRST - 1)
    for log in blocks[FIRST]:
        stream.on_log(log)
    stream.on_head(FIRST + 100)
    assert FIRST not in stream.published


def test_the_subscription_filter_and_the_redacted_url():
    node = EvmLogs(EvmLogsParams(
        api_key="s3cr3t", endpoint="wss://rpc.example/v2/{api_key}",
        addresses=("0xAbCdEf0000000000000000000000000000000001",), topics=("0x" + "AB" * 32, "0x" + "cd" * 32),
    ))
    assert node.log_filter() == {"address": ["0xabcdef0000000000000000000000000000000001"],
                                 "topics": [["0x" + "ab" * 32, "0x" + "cd" * 32]]}
    url = node._url(node.params.endpoint)
    assert url == "wss://rpc.example/v2/s3cr3t" and node.redact(url) == "wss://rpc.example/v2/***"
    assert EvmLogs(dataclasses.replace(node.params, addresses=(), topics=())).log_filter() == {}

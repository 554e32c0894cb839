"""transform.book_delta on the real captures in ../shared/data.

Kraken's book channel carries a CRC32 of its top 10 levels on every update: the book the node
publishes (and the one a consumer rebuilds from the node's deltas) must match it every time.
Coinbase Advanced Trade sends a full snapshot then updates: the node's top-N must equal the top-N
of a plain dict book fed everything.
"""

from __future__ import annotations

import heapq
import io
import json
import zlib

import pytest

from alphapulse import protocol as P
from nodes.book_delta import LIVE, BookDelta, BookDeltaParams
from tests.transforms import Downstream, Upstream, context, feed, input_link


def kraken_frames(path):
    """(pair, kind, bids, asks, checksum, price decimals) per book frame, prices as the raw strings."""
    for line in path.read_text(encoding="utf-8").splitlines():
        _, sep, body = line.partition(": ")
        if not sep or not body.startswith("["):
            continue
        frame = json.loads(body)
        bids, asks, kind, checksum = [], [], "update", None
        for part in frame[1:-2]:
            kind = "snapshot" if "as" in part or "bs" in part else kind
            checksum = part.get("c", checksum)
            for key, side in (("as", asks), ("a", asks), ("bs", bids), ("b", bids)):
                side.extend((level[0], level[1]) for level in part.get(key, ()))
        yield frame[-1], kind, bids, asks, checksum


def kraken_checksum(bids, asks, price_decimals: int) -> int:
    """Kraken v1: top 10 asks then top 10 bids, '.' removed and leading zeros stripped, CRC32."""
    def text(value: int, decimals: int) -> str:  # the venue's digits of a fixed-point (10^8) value
        scaled = value * 10 ** (decimals - 8) if decimals >= 8 else value // 10 ** (8 - decimals)
        return str(scaled).lstrip("0")

    parts = [text(p, price_decimals) + text(q, 8) for p, q in asks[:10]]
    parts += [text(p, price_decimals) + text(q, 8) for p, q in bids[:10]]
    return zlib.crc32("".join(parts).encode())


def test_kraken_top_10_matches_the_venue_checksum_on_every_update(shared_data):
    node = BookDelta(BookDeltaParams(depth=10, extra_levels=100))
    ctx = context(link=input_link())
    up = Upstream()
    down = Downstream()
    decimals: dict[str, int] = {}
    seq: dict[str, int] = {}
    checked = 0
    for pair, kind, bids, asks, checksum in kraken_frames(shared_data / "kraken" / "KRAKEN.ws.50.0"):
        inst = P.spot("kraken", *pair.split("/"))
        for price, _ in bids + asks:
            decimals.setdefault(pair, len(price.partition(".")[2]))
        s = seq[pair] = seq.get(pair, 0) + 1
        if kind == "snapshot":
            record = P.OrderBook(inst.id, s, s, tuple((P.parse_fixed(p), P.parse_fixed(q)) for p, q in bids),
                                 tuple((P.parse_fixed(p), P.parse_fixed(q)) for p, q in asks))
        else:
            changes = [(P.parse_fixed(p), P.parse_fixed(q), 0) for p, q in bids]
            changes += [(P.parse_fixed(p), P.parse_fixed(q), 1) for p, q in asks]
            record = P.OrderBookDelta(inst.id, s, s, s - 1, 0, tuple(changes))
        down.apply(feed(node, ctx, up.block(P.mapping_for(inst), record)))
        slot = node.books.slot_of[inst.id]
        assert node.books.state[slot] == LIVE, pair
        published = node.books.published(slot)
        assert down.levels(inst.id) == published
        if checksum is not None:
            assert kraken_checksum(*published, decimals[pair]) == int(checksum), (pair, s)
            checked += 1
    assert checked > 2000
    assert ctx.counters["errors.bad_book_value"] == 0 and ctx.counters["books.incomplete"] == 0


def coinbase_events(path):
    zstandard = pytest.importorskip("zstandard")
    with path.open("rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8").read()
    for line in text.splitlines()[1:]:
        row = json.loads(line)
        if row.get("t") != "recv":
            continue
        frame = json.loads(row["data"])
        if frame.get("channel") == "l2_data":
            yield from frame["events"]


def test_coinbase_advanced_top_n_equals_a_full_dict_book(shared_data):
    depth = 50
    node = BookDelta(BookDeltaParams(depth=depth))
    ctx = context(link=input_link())
    up = Upstream()
    down = Downstream()
    full: dict[int, tuple[dict, dict]] = {}
    seq: dict[int, int] = {}
    updates = 0
    for event in coinbase_events(shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst"):
        inst = P.spot("coinbase", *event["product_id"].split("-"))
        changes = [(P.parse_fixed(u["price_level"]), P.parse_fixed(u["new_quantity"]),
                    0 if u["side"] == "bid" else 1) for u in event["updates"]]
        s = seq[inst.id] = seq.get(inst.id, 0) + 1
        if event["type"] == "snapshot":
            book = full[inst.id] = ({}, {})
            for price, qty, side in changes:
                if qty:
                    book[side][price] = qty
            # one OrderBook TLV holds 4094 levels: an adapter sends the best 2047 per side
            record = P.OrderBook(inst.id, s, s, tuple(heapq.nlargest(2047, book[0].items())),
                                 tuple(heapq.nsmallest(2047, book[1].items())))
        else:
            for price, qty, side in changes:
                if qty:
                    full[inst.id][side][price] = qty
                else:
                    full[inst.id][side].pop(price, None)
            record = P.OrderBookDelta(inst.id, s, s, s - 1, 0, tuple(changes))
            updates += 1
        down.apply(feed(node, ctx, up.block(record)))
        slot = node.books.slot_of[inst.id]
        assert node.books.state[slot] == LIVE
        if s % 20 == 0 or event["type"] == "snapshot":
            bids, asks = full[inst.id]
            want = (heapq.nlargest(depth, bids.items()), heapq.nsmallest(depth, asks.items()))
            assert node.books.published(slot) == want
            assert down.levels(inst.id) == want
    assert updates > 700 and len(full) == 2
    stats = node.statistics()["instruments"]
    assert all(s["compression_ratio"] < 0.2 for s in stats.values())

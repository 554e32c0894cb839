"""transform.book_delta on real frames and blocks through a real NodeContext."""

from __future__ import annotations

import numpy as np
import pytest

from alphapulse import protocol as P
from nodes.book_delta import BookDelta, BookDeltaParams
from tests._fresh import assert_fresh_run_ok
from tests.transforms import Downstream, Upstream, context, feed, input_link, snapshot_requests

BTC = P.spot("kraken", "BTC", "USD")
ETH = P.spot("coinbase", "ETH", "USD")
U = 100_000_000  # 1.0 in fixed point


def px(x: float) -> int:
    return P.parse_fixed(str(x))


def book(inst, bids, asks, seq=100, ts=10):
    return P.OrderBook(inst.id, ts, seq, tuple((px(p), q) for p, q in bids), tuple((px(p), q) for p, q in asks))


def delta(inst, changes, seq, prev=None, ts=11, flags=0):
    prev = seq - 1 if prev is None else prev
    return P.OrderBookDelta(inst.id, ts, seq, prev, flags, tuple((px(p), q, s) for p, q, s in changes))


def node_and_ctx(**params):
    node = BookDelta(BookDeltaParams(**params))
    link = input_link()
    return node, context(link=link), link


BIDS = [(100, 1), (99, 2), (98, 3), (97, 4), (96, 5)]
ASKS = [(101, 1), (102, 2), (103, 3), (104, 4)]


def test_first_snapshot_publishes_mapping_and_top_n():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    out = feed(node, ctx, up.block(P.mapping_for(BTC), book(BTC, BIDS, ASKS)))
    assert out[0] == [P.mapping_for(BTC)]
    [snap] = out[1]
    assert isinstance(snap, P.OrderBook)
    assert snap.bids == tuple((px(p), q) for p, q in BIDS[:3])
    assert snap.asks == tuple((px(p), q) for p, q in ASKS[:3])
    assert (snap.exchange_sequence, snap.exchange_ts_ns) == (100, 10)
    assert ctx.counters["snapshots.full"] == 1 and ctx.counters["mappings"] == 1


def test_delta_inside_top_n_is_compact_and_outside_is_silent():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, BIDS, ASKS)))
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(99, 7, 0), (104, 9, 1)], 101)))
    assert d.changes == ((px(99), 7, 0),)  # 104 is below the top 3 asks: not published
    assert (d.exchange_sequence, d.prev_sequence) == (101, 100)
    assert feed(node, ctx, up.block(delta(BTC, [(96, 1, 0)], 102))) == []
    assert ctx.counters["updates"] == 2 and ctx.counters["updates.unchanged"] == 1
    # the next published delta continues from the last *published* sequence
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(101, 5, 1)], 103)))
    assert (d.exchange_sequence, d.prev_sequence) == (103, 101)


def test_removal_refills_from_deeper_levels_and_insert_pushes_out():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, BIDS, ASKS)))
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(100, 0, 0)], 101)))
    assert d.changes == ((px(100), 0, 0), (px(97), 4, 0))
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(100.5, 8, 0)], 102)))
    assert d.changes == ((px(100.5), 8, 0), (px(97), 0, 0))  # 97 pushed out of the top 3
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(101.5, 1, 1), (101.5, 2, 1)], 103)))  # last change wins
    assert d.changes == ((px(101.5), 2, 1), (px(103), 0, 1))
    bids, asks = node.books.published(0)
    assert bids == [(px(100.5), 8), (px(99), 2), (px(98), 3)]
    assert asks == [(px(101), 1), (px(101.5), 2), (px(102), 2)]


def test_delta_before_snapshot_is_dropped_and_a_snapshot_requested_once():
    node, ctx, link = node_and_ctx(depth=3)
    up = Upstream(source=9)
    assert feed(node, ctx, up.block(delta(BTC, [(100, 1, 0)], 5), delta(BTC, [(100, 2, 0)], 6))) == []
    assert ctx.counters["dropped.no_snapshot_yet"] == 2
    [request] = snapshot_requests(link)
    assert (request.source, request.instrument_id) == (9, BTC.id)
    out = feed(node, ctx, up.block(book(BTC, BIDS, ASKS, seq=6)))
    assert isinstance(out[0][0], P.OrderBook)


def test_resync_snapshot_is_diffed_not_reset():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, BIDS, ASKS)))
    new_bids = [(100, 1), (99, 5), (97, 4)]
    [[d]] = feed(node, ctx, up.block(book(BTC, new_bids, ASKS, seq=200)))
    assert isinstance(d, P.OrderBookDelta)
    assert d.changes == ((px(99), 5, 0), (px(98), 0, 0), (px(97), 4, 0))
    assert (d.exchange_sequence, d.prev_sequence) == (200, 100)
    assert ctx.counters["resyncs"] == 1


def test_venue_sequence_gap_withholds_until_snapshot():
    node, ctx, link = node_and_ctx(depth=3)
    up = Upstream()
    down = Downstream()
    down.apply(feed(node, ctx, up.block(P.mapping_for(BTC), book(BTC, BIDS, ASKS))))
    assert feed(node, ctx, up.block(delta(BTC, [(99, 7, 0)], 105, prev=104))) == []
    assert ctx.counters["dropped.sequence_gap"] == 1
    assert feed(node, ctx, up.block(delta(BTC, [(98, 7, 0)], 106))) == []
    assert ctx.counters["dropped.stale_book"] == 1
    assert [r.instrument_id for r in snapshot_requests(link)] == [BTC.id]
    down.apply(feed(node, ctx, up.block(book(BTC, [(100, 2), (98, 7)], ASKS, seq=106))))
    assert down.levels(BTC.id) == ([(px(100), 2), (px(98), 7)], [(px(p), q) for p, q in ASKS[:3]])
    assert node.statistics()["instruments"]["kraken:BTC-USD"]["state"] == "live"


def test_incomplete_book_is_withheld_and_recovered():
    node, ctx, link = node_and_ctx(depth=2, extra_levels=1)
    up = Upstream()
    down = Downstream()
    down.apply(feed(node, ctx, up.block(book(BTC, BIDS, ASKS))))  # keeps 3 of 5 bids: truncated
    down.apply(feed(node, ctx, up.block(delta(BTC, [(100, 0, 0)], 101))))
    assert down.levels(BTC.id)[0] == [(px(99), 2), (px(98), 3)]
    # a change in the region we dropped is ignored: 97 and 96 exist upstream but not here
    assert feed(node, ctx, up.block(delta(BTC, [(95, 1, 0)], 102))) == []
    assert ctx.counters["levels.beyond_known"] == 1
    # two levels known, depth 2: removing one leaves a top-2 we cannot know
    assert feed(node, ctx, up.block(delta(BTC, [(99, 0, 0)], 103))) == []
    assert ctx.counters["books.incomplete"] == 1 and len(snapshot_requests(link)) == 1
    down.apply(feed(node, ctx, up.block(book(BTC, [(98, 3), (97, 4), (96, 5)], ASKS, seq=103))))
    assert down.levels(BTC.id)[0] == [(px(98), 3), (px(97), 4)]


def test_many_instruments_and_sources_in_one_block():
    node, ctx, _ = node_and_ctx(depth=2)
    a, b = Upstream(source=1), Upstream(source=2)
    frames = b"".join([
        a.frame(P.mapping_for(BTC)), b.frame(P.mapping_for(ETH)),
        a.frame(book(BTC, BIDS, ASKS)), b.frame(book(ETH, [(10, 1)], [(11, 1)])),
        a.frame(delta(BTC, [(100, 3, 0)], 101)), b.frame(delta(ETH, [(11, 0, 1)], 101)),
    ])
    down = Downstream()
    down.apply(feed(node, ctx, P.FrameBlock.from_bytes(frames)))
    assert down.levels(BTC.id) == ([(px(100), 3), (px(99), 2)], [(px(101), 1), (px(102), 2)])
    assert down.levels(ETH.id) == ([(px(10), 1)], [])
    stats = node.statistics()
    assert set(stats["instruments"]) == {"kraken:BTC-USD", "coinbase:ETH-USD"}


def test_bad_input_is_counted_never_raised():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, BIDS, ASKS)))
    unsorted = book(BTC, [(98, 1), (99, 1)], ASKS, seq=120)
    negative = delta(BTC, [(-1, 1, 0)], 101)
    bad_side = P.OrderBookDelta(BTC.id, 1, 101, 100, 0, ((px(100), 1, 2),))
    short = P.encode_tlv(P.TLVType.ORDER_BOOK_DELTA, b"\x00" * 20)
    lying = bytearray(P.encode(delta(BTC, [(100, 1, 0)], 101)))
    lying[2 + 32] = 5  # n_changes says 5, one change present
    mapping_bad_id = P.InstrumentMapping(12345, "spot|kraken|BTC|USD")
    assert feed(node, ctx, up.block(unsorted, negative, bad_side, short, bytes(lying), mapping_bad_id)) == []
    assert ctx.counters["errors.unsorted_snapshot"] == 1
    assert ctx.counters["errors.bad_book_value"] == 4
    assert ctx.counters["errors.mapping_mismatch"] == 1
    # a frame whose TLV framing is broken (claims more bytes than the payload holds)
    good = up.frame(delta(BTC, [(100, 2, 0)], 101))
    header = P.unpack_header(good[:32])
    payload = b"\x07\xff" + good[34:]
    broken = P.encode_message(header.relay_domain, header.source, header.sequence + 1, 1, payload)
    out = feed(node, ctx, P.FrameBlock.from_bytes(good + broken))
    assert out == [[P.OrderBookDelta(BTC.id, 11, 101, 100, 0, ((px(100), 2, 0),))]]
    assert ctx.counters["errors.bad_tlv"] == 1
    assert node.books.published(0)[0][0] == (px(100), 2)


def test_empty_placeholders_and_other_types_are_ignored():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    trade = P.Trade(BTC.id, px(100), U, 1, 1)
    assert feed(node, ctx, up.block(trade, b"")) == []


def test_snapshot_hook_and_huge_books_split_over_tlvs():
    depth = 3000
    node, ctx, _ = node_and_ctx(depth=depth, extra_levels=0)
    up = Upstream()
    bids = [(px(50_000) - i * U, i + 1) for i in range(2047)]
    asks = [(px(50_001) + i * U, i + 1) for i in range(2047)]
    feed(node, ctx, up.block(P.mapping_for(BTC)))
    down = Downstream()
    down.apply(feed(node, ctx, up.block(P.OrderBook(BTC.id, 1, 7, tuple(bids), tuple(asks)))))
    # grow the book past one TLV's room (4094 levels) with one delta of 1500 levels
    more = tuple((px(40_000) - i * U, 1, 0) for i in range(1500))
    out = feed(node, ctx, up.block(P.OrderBookDelta(BTC.id, 2, 8, 7, 0, more)))
    down.apply(out)
    assert down.levels(BTC.id) == node.books.published(0)
    payloads = node.snapshot(0)
    assert P.decode(P.TLVType.INSTRUMENT_MAPPING, payloads[0][2:]) == P.mapping_for(BTC)
    tlvs = P.decode_payload(payloads[1])
    assert isinstance(tlvs[0], P.OrderBook) and isinstance(tlvs[1], P.OrderBookDelta)
    fresh = Downstream()
    fresh.apply([tlvs])
    assert fresh.levels(BTC.id) == node.books.published(0)
    assert [len(b) for b in fresh.levels(BTC.id)] == [depth, 2047]
    assert node.snapshot(ETH.id) == []


def test_compression_counters_and_statistics():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(P.mapping_for(BTC), book(BTC, BIDS, ASKS)))
    feed(node, ctx, up.block(delta(BTC, [(99, 7, 0)], 101)))
    delta_msg = 32 + 2 + 35 + 17
    snapshot_msg = 32 + 2 + 28 + 6 * 16
    assert ctx.counters["bytes_delta.kraken:BTC-USD"] == delta_msg
    assert ctx.counters["bytes_snapshot.kraken:BTC-USD"] == snapshot_msg
    stats = node.statistics()["instruments"]["kraken:BTC-USD"]
    assert stats["compression_ratio"] == pytest.approx(delta_msg / snapshot_msg, abs=1e-6)


def test_flags_and_pass_through():
    node, ctx, _ = node_and_ctx(depth=3, pass_through_snapshots=True)
    up = Upstream()
    out = feed(node, ctx, up.block(book(BTC, BIDS, ASKS)))
    assert [type(m[0]) for m in out] == [P.OrderBook, P.OrderBook]
    assert out[1][0] == book(BTC, BIDS, ASKS)
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(99, 7, 0)], 101, flags=1)))
    assert d.flags == 1


def test_too_many_instruments_are_dropped():
    node, ctx, _ = node_and_ctx(depth=3, max_instruments=1)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, BIDS, ASKS), book(ETH, BIDS, ASKS)))
    assert ctx.counters["dropped.too_many_instruments"] == 1


def test_slots_grow_beyond_the_first_allocation():
    node, ctx, _ = node_and_ctx(depth=2)
    up = Upstream()
    instruments = [P.spot("kraken", f"C{i}", "USD") for i in range(40)]
    out = feed(node, ctx, up.block(*[book(i, BIDS, ASKS) for i in instruments]))
    assert len(out) == 40
    assert sorted(node.books.slot_of[inst.id] for inst in instruments) == list(range(40))
    for inst in instruments:
        assert node.books.published(node.books.slot_of[inst.id])[0] == [(px(100), 1), (px(99), 2)]
    assert np.all(node.books.state[:40] == 1)


def test_snapshot_on_an_emptied_book_goes_out_whole():
    node, ctx, _ = node_and_ctx(depth=3)
    up = Upstream()
    feed(node, ctx, up.block(book(BTC, [(100, 1)], [(101, 1)])))
    [[d]] = feed(node, ctx, up.block(delta(BTC, [(100, 0, 0), (101, 0, 1)], 101)))
    assert d.changes == ((px(100), 0, 0), (px(101), 0, 1))
    [[snap]] = feed(node, ctx, up.block(book(BTC, BIDS, ASKS, seq=150)))
    assert isinstance(snap, P.OrderBook) and len(snap.bids) == 3
    assert ctx.counters["snapshots.full"] == 2 and ctx.counters["resyncs"] == 0


def test_load_kernels_leaves_real_blocks_nothing_to_compile():
    """The node host calls ``load_kernels`` before the node serves. Afterwards real blocks (a
    mapping, snapshots, deltas, a resync, a snapshot request, other params) need no kernel
    specialisation it did not load. In a fresh interpreter, where nothing else has run them."""
    assert_fresh_run_ok("""
        import numba
        import nodes.book_delta as kind
        from tests.transforms import test_book_delta as t

        kernels = {n: k for n, k in vars(kind).items() if isinstance(k, numba.core.registry.CPUDispatcher)}
        kind.BookDelta(kind.BookDeltaParams()).load_kernels()
        loaded = {n: set(k.signatures) for n, k in kernels.items()}
        assert loaded["process_updates"] and loaded["index_tlvs"] and loaded["write_book"], loaded
        for test in (t.test_first_snapshot_publishes_mapping_and_top_n, t.test_resync_snapshot_is_diffed_not_reset,
                     t.test_delta_before_snapshot_is_dropped_and_a_snapshot_requested_once,
                     t.test_snapshot_hook_and_huge_books_split_over_tlvs, t.test_flags_and_pass_through):
            test()
        new = {n: set(k.signatures) - loaded[n] for n, k in kernels.items() if set(k.signatures) - loaded[n]}
        assert not new, new
        print("ok")
    """)


@pytest.mark.parametrize("mixed", [False, True], ids=["one-source block", "two-source block"])
def test_a_restarted_upstream_does_not_continue_the_books_kept_from_before(mixed):
    """A venue adapter restarted mid-stream (a new sequence epoch) sends deltas against the venue's
    book of now; applied to the book kept from before its restart (which missed what changed
    while it was down) they made crossed books. Its books go stale until a snapshot comes."""
    node, ctx, link = node_and_ctx(depth=3)
    before, other = Upstream(source=9), Upstream(source=4)
    down = Downstream()
    down.apply(feed(node, ctx, before.block(P.mapping_for(BTC), book(BTC, BIDS, ASKS))))
    down.apply(feed(node, ctx, other.block(P.mapping_for(ETH), book(ETH, BIDS, ASKS))))
    down.apply(feed(node, ctx, before.block(delta(BTC, [(99, 7, 0)], 101))))
    assert ctx.counters["upstream_restarts"] == 0

    after = Upstream(source=9)
    after.builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 9, (2 << 40) | 40)  # joined its new epoch late
    moved = delta(BTC, [(101, 0, 1), (100.5, 3, 1)], 0, prev=0)  # the venue's book moved on meanwhile
    if mixed:
        block = P.FrameBlock.from_bytes(other.frame(delta(ETH, [(99, 9, 0)], 101)) + after.frame(moved))
    else:
        block = after.block(moved)
    out = feed(node, ctx, block)
    down.apply(out)
    assert ctx.counters["upstream_restarts"] == 1 and ctx.counters["books.stale_on_upstream_restart"] == 1
    assert ctx.counters["dropped.stale_book"] == 1  # not applied to the old book
    assert [r.instrument_id for r in snapshot_requests(link)] == [BTC.id]
    assert down.levels(ETH.id)[0][1] == (px(99), 9 if mixed else 2)  # the other source's books are untouched
    # the venue's snapshot of now brings the book back, as a diff against what went out
    fresh_asks = [(100.5, 3), (102, 2), (103, 3)]
    down.apply(feed(node, ctx, after.block(book(BTC, BIDS, fresh_asks, seq=0))))
    bids, asks = down.levels(BTC.id)
    assert asks == [(px(p), q) for p, q in fresh_asks] and bids[0][0] < asks[0][0]
    assert node.statistics()["instruments"]["kraken:BTC-USD"]["state"] == "live"
    assert feed(node, ctx, after.block(delta(BTC, [(100.5, 4, 1)], 0, prev=0)))  # and it flows again

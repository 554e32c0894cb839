"""transform.arbitrage on synthetic books and quotes with known answers (real frames, real context)."""

from __future__ import annotations

import dataclasses

from alphapulse import protocol as P
from nodes.arbitrage import Arbitrage, ArbitrageParams
from nodes.book_delta import BookDelta, BookDeltaParams
from tests.transforms import Upstream, context, feed, input_link, snapshot_requests

A = P.spot("venue_a", "BTC", "USD")
B = P.spot("venue_b", "BTC", "USD")
C = P.spot("venue_c", "BTC", "USD")
A_ETH = P.spot("venue_a", "ETH", "USD")
B_ETH = P.spot("venue_b", "ETH", "USD")
MS = 1_000_000


def px(x) -> int:
    return P.parse_fixed(str(x))


def book(inst, bids, asks, seq=1, ts=0):
    return P.OrderBook(inst.id, ts, seq, tuple((px(p), px(q)) for p, q in bids), tuple((px(p), px(q)) for p, q in asks))


def make(**params):
    base = {"min_spread_bps": 5, "fees_bps": {"venue_a": 10, "venue_b": 20}, "throttle_ms": 500}
    node = Arbitrage(ArbitrageParams(**{**base, **params}))
    link = input_link()
    return node, context(link=link, relay_domain=P.RelayDomain.SIGNAL), link


def signals(out):
    return [r for tlvs in out for r in tlvs if isinstance(r, P.ArbitrageSignal)]


def setup(node, ctx, up, ts=0, a_book=None, b_book=None):
    a_book = a_book or book(A, [(99.9, 5)], [(100, 2)], ts=7)
    b_book = b_book or book(B, [(100.5, 1.5)], [(100.6, 3)], ts=9)
    return feed(node, ctx, up.block(P.mapping_for(A), P.mapping_for(B), a_book, b_book, ts=ts))


def test_signal_net_of_fees_sized_by_both_tops():
    node, ctx, _ = make()
    [sig] = signals(setup(node, ctx, Upstream()))
    # buy A at 100.00 (fee 10 bps = 0.100), sell B at 100.50 (fee 20 bps = 0.201): 0.199 per unit
    assert (sig.instrument_id, sig.sell_instrument_id) == (A.id, B.id)
    assert (sig.buy_price, sig.sell_price) == (px(100), px(100.5))
    assert sig.max_quantity == px(1.5)
    assert sig.net_spread_bps == px(19.9)
    assert sig.fees == px("0.4515")
    assert sig.net_profit == px("0.2985")
    assert sig.detected_ns == 9 and sig.path == ()
    assert sig.signal_id == (ctx.epoch << 40) + 1
    assert ctx.counters["signals"] == 1


def test_threshold_and_live_fee_changes():
    node, ctx, _ = make(min_spread_bps=20)
    up = Upstream()
    assert signals(setup(node, ctx, up)) == []
    node.reconfigure(dataclasses.replace(node.params, min_spread_bps=19.9))
    assert len(signals(feed(node, ctx, up.block(book(B, [(100.5, 1.5)], [(100.6, 3)], seq=2), ts=1)))) == 1
    node.reconfigure(dataclasses.replace(node.params, fees_bps={"venue_a": 10, "venue_b": 30}, throttle_ms=0))
    assert signals(feed(node, ctx, up.block(book(B, [(100.5, 1.5)], [(100.6, 3)], seq=3), ts=2))) == []
    node.reconfigure(dataclasses.replace(node.params, fees_bps={}, default_fee_bps=0, min_spread_bps=0))
    [sig] = signals(feed(node, ctx, up.block(book(B, [(100.5, 1.5)], [(100.6, 3)], seq=4), ts=3)))
    assert sig.net_spread_bps == px(50) and sig.fees == 0 and sig.net_profit == px(0.75)


def test_throttle_per_pair_and_resignal_on_material_change():
    node, ctx, _ = make(throttle_ms=500, resignal_bps=2)
    up = Upstream()
    assert len(signals(setup(node, ctx, up, ts=0))) == 1
    same = book(B, [(100.5, 1.5)], [(100.6, 3)], seq=2)
    assert signals(feed(node, ctx, up.block(same, ts=100 * MS))) == []
    assert ctx.counters["throttled"] == 1
    # 1 bps better: not material, still throttled; 3 bps better than the last signal: material
    assert signals(feed(node, ctx, up.block(book(B, [(100.51, 1.5)], [(100.6, 3)], seq=3), ts=200 * MS))) == []
    [sig] = signals(feed(node, ctx, up.block(book(B, [(100.53, 1.5)], [(100.6, 3)], seq=4), ts=300 * MS)))
    assert sig.net_spread_bps == px(22.894)
    # the throttle restarts from that signal; after throttle_ms the same spread goes out again
    assert signals(feed(node, ctx, up.block(book(B, [(100.53, 1.5)], [(100.6, 3)], seq=5), ts=700 * MS))) == []
    assert len(signals(feed(node, ctx, up.block(book(B, [(100.53, 1.5)], [(100.6, 3)], seq=6), ts=800 * MS)))) == 1


def test_both_directions_and_three_venues_are_separate_pairs():
    node, ctx, _ = make(fees_bps={}, default_fee_bps=0, min_spread_bps=1)
    up = Upstream()
    out = feed(node, ctx, up.block(
        P.mapping_for(A), P.mapping_for(B), P.mapping_for(C),
        book(A, [(99, 1)], [(100, 1)]), book(B, [(101, 2)], [(102, 2)]), book(C, [(103, 3)], [(104, 3)]),
    ))
    pairs = sorted((s.instrument_id, s.sell_instrument_id, s.max_quantity) for s in signals(out))
    assert pairs == sorted([(A.id, B.id, px(1)), (A.id, C.id, px(1)), (B.id, C.id, px(2))])


def test_stale_books_are_ignored():
    node, ctx, _ = make(max_book_age_ms=2000)
    up = Upstream()
    feed(node, ctx, up.block(P.mapping_for(A), P.mapping_for(B), book(B, [(100.5, 1.5)], [(100.6, 3)]), ts=0))
    assert signals(feed(node, ctx, up.block(book(A, [(99.9, 5)], [(100, 2)]), ts=2001 * MS))) == []
    assert ctx.counters["legs.stale"] == 1
    assert len(signals(feed(node, ctx, up.block(book(B, [(100.5, 1.5)], [(100.6, 3)], seq=2), ts=2002 * MS)))) == 1


def test_crossing_within_one_venue_is_ignored():
    node, ctx, _ = make(fees_bps={}, default_fee_bps=0, min_spread_bps=0)
    up = Upstream()
    crossed = book(A, [(101, 1)], [(100, 1)])
    assert signals(feed(node, ctx, up.block(P.mapping_for(A), crossed))) == []
    # with a second venue the crossed one is still skipped as unreliable
    out = feed(node, ctx, up.block(P.mapping_for(B), book(B, [(100.5, 1)], [(100.7, 1)])))
    assert signals(out) == []
    assert ctx.counters["dropped.crossed_book"] == 1  # evaluated once a second venue exists


def test_quotes_work_without_books():
    node, ctx, _ = make(fees_bps={}, default_fee_bps=0, min_spread_bps=1)
    up = Upstream()
    out = feed(node, ctx, up.block(
        P.mapping_for(A), P.mapping_for(C),
        P.Quote(A.id, px(99), px(1), px(100), px(0.25), 5),
        P.Quote(C.id, px(100.2), px(4), px(100.3), px(4), 6),
    ))
    [sig] = signals(out)
    assert (sig.instrument_id, sig.sell_instrument_id, sig.max_quantity) == (A.id, C.id, px(0.25))
    assert sig.net_spread_bps == px(20) and sig.net_profit == px(0.05)


def test_deltas_move_the_top_and_gaps_ask_for_snapshots():
    node, ctx, link = make(fees_bps={}, default_fee_bps=0, min_spread_bps=1, throttle_ms=0)
    up = Upstream(source=3)
    setup(node, ctx, up, b_book=book(B, [(99.95, 1)], [(100.6, 3)], seq=10))
    # B's best bid 99.95 < A's ask 100: nothing until a delta lifts B's bid
    lift = P.OrderBookDelta(B.id, 20, 11, 10, 0, ((px(100.1), px(2), 0),))
    [sig] = signals(feed(node, ctx, up.block(lift)))
    assert (sig.sell_price, sig.max_quantity) == (px(100.1), px(2))
    remove = P.OrderBookDelta(B.id, 21, 12, 11, 0, ((px(100.1), 0, 0),))
    assert signals(feed(node, ctx, up.block(remove))) == []
    gap = P.OrderBookDelta(B.id, 22, 20, 15, 0, ((px(100.2), px(1), 0),))
    assert signals(feed(node, ctx, up.block(gap))) == []
    assert ctx.counters["dropped.sequence_gap"] == 1
    unknown = P.OrderBookDelta(C.id, 1, 2, 1, 0, ((px(1), px(1), 0),))
    feed(node, ctx, up.block(P.mapping_for(C), unknown))
    assert ctx.counters["dropped.no_snapshot_yet"] == 1
    assert [(r.source, r.instrument_id) for r in snapshot_requests(link)] == [(3, B.id), (3, C.id)]


def test_a_restarted_book_source_is_not_continued_until_its_snapshot():
    """The books node restarted and this one joined its new epoch mid-stream: its deltas (sequence
    0 from a venue without sequences, so no prev check) must not land on the books kept from
    before, where they crossed a book; the leg waits for the snapshot the link asked for."""
    node, ctx, link = make(fees_bps={}, default_fee_bps=0, min_spread_bps=1, throttle_ms=0)
    setup(node, ctx, Upstream(source=3), b_book=book(B, [(99.95, 1)], [(100.6, 3)], seq=0))
    restarted = Upstream(source=3)
    restarted.builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 3, (7 << 40) | 25)  # a later epoch, mid-stream
    # against the old book this would lift B's bid over its own ask (100.6) and over A's ask (a false signal)
    moved = P.OrderBookDelta(B.id, 30, 0, 0, 0, ((px(100.7), px(2), 0),))
    assert signals(feed(node, ctx, restarted.block(moved))) == []
    assert ctx.counters["upstream_restarts"] == 1 and ctx.counters["books.stale_on_upstream_restart"] == 2
    assert ctx.counters["dropped.no_snapshot_yet"] == 1 and ctx.counters["dropped.crossed_book"] == 0
    assert [(r.source, r.instrument_id) for r in snapshot_requests(link)] == [(3, B.id)]
    # the snapshot of now: B bids 100.7 and asks 100.8, above A's ask of 100: a real signal
    fresh = book(B, [(100.7, 2)], [(100.8, 3)], seq=0, ts=31)
    [sig] = signals(feed(node, ctx, restarted.block(book(A, [(99.9, 5)], [(100, 2)], seq=0, ts=31), fresh)))
    assert (sig.buy_price, sig.sell_price) == (px(100), px(100.7))


def test_assets_filter_and_grouping_by_base_quote():
    node, ctx, _ = make(assets=("ETH-USD",), fees_bps={}, default_fee_bps=0, min_spread_bps=1)
    up = Upstream()
    assert signals(setup(node, ctx, up)) == []
    out = feed(node, ctx, up.block(P.mapping_for(A_ETH), P.mapping_for(B_ETH),
                                   book(A_ETH, [(9, 1)], [(10, 1)]), book(B_ETH, [(11, 1)], [(12, 1)])))
    [sig] = signals(out)
    assert (sig.instrument_id, sig.sell_instrument_id) == (A_ETH.id, B_ETH.id)
    assert node.statistics()["assets"] == {"ETH-USD": ["venue_a", "venue_b"]}


def test_bad_input_is_counted_never_raised():
    node, ctx, _ = make()
    up = Upstream()
    short_quote = P.encode_tlv(P.TLVType.QUOTE, b"\x00" * 10)
    bad_book = P.encode_tlv(P.TLVType.ORDER_BOOK, b"\x00" * 30)
    bad_mapping = P.InstrumentMapping(5, "not an instrument")
    assert feed(node, ctx, up.block(short_quote, bad_book, bad_mapping)) == []
    assert ctx.counters["errors.bad_tlv"] == 2 and ctx.counters["errors.bad_mapping"] == 1


def test_fed_by_book_delta_output():
    """The arbitrage node reads what transform.book_delta publishes (frames, not objects)."""
    books = BookDelta(BookDeltaParams(depth=5))
    books_ctx = context(name="books")
    node, ctx, _ = make(max_book_age_ms=3_600_000)  # book_delta stamps wall-clock time: no staleness here
    up = Upstream()
    books.handle_block(up.block(P.mapping_for(A), P.mapping_for(B), book(A, [(99.9, 5)], [(100, 2)], ts=7),
                                book(B, [(100.2, 1.5)], [(100.6, 3)], ts=9)), books_ctx)
    books.handle_block(up.block(P.OrderBookDelta(B.id, 12, 2, 1, 0, ((px(100.5), px(1.5), 0),))), books_ctx)
    published = P.FrameBlock.from_bytes(b"".join(books_ctx._pending))
    [sig] = signals(feed(node, ctx, published))
    assert (sig.sell_price, sig.net_spread_bps, sig.detected_ns) == (px(100.5), px(19.9), 12)

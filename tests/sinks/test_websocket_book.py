"""The bridge's book views, sans-IO: a client applying the view deltas always holds the true top N."""

from __future__ import annotations

import random

import pytest

from alphapulse import protocol
from nodes._websocket import Market

INST = protocol.spot("sim_a", "BTC", "USD")
BID, ASK = protocol.BookSide.BID, protocol.BookSide.ASK


def _top(levels: dict[int, int], depth: int, best_high: bool) -> list[tuple[int, int]]:
    return [(p, levels[p]) for p in sorted(levels, reverse=best_high)[:depth]]


@pytest.mark.parametrize("seed", range(5))
def test_view_deltas_rebuild_the_exact_top_n(seed: int) -> None:
    rng = random.Random(seed)
    depth = rng.choice((1, 3, 5))
    market = Market(depth)
    list(market.apply([protocol.mapping_for(INST)], 1))
    full = {BID: {}, ASK: {}}
    seen = {BID: {}, ASK: {}}
    version = 0
    for step in range(400):
        if step % 97 == 0:  # a fresh snapshot now and then (books are reset upstream)
            full = {BID: {100 - k: rng.randint(1, 9) for k in range(1, rng.randint(0, 12) + 1)},
                    ASK: {100 + k: rng.randint(1, 9) for k in range(1, rng.randint(0, 12) + 1)}}
            tlv = protocol.OrderBook(INST.id, 0, 0, tuple(sorted(full[BID].items(), reverse=True)),
                                     tuple(sorted(full[ASK].items())))
        else:
            changes = []
            for _ in range(rng.randint(1, 4)):
                side = rng.choice((BID, ASK))
                price = 100 - rng.randint(1, 15) if side == BID else 100 + rng.randint(1, 15)
                qty = rng.choice((0, 0, rng.randint(1, 9)))
                changes.append((price, qty, side))
                if qty:
                    full[side][price] = qty
                else:
                    full[side].pop(price, None)
            tlv = protocol.OrderBookDelta(INST.id, 0, 0, 0, 0, tuple(changes))
        assert list(market.apply([tlv], step)) == []
        for event in market.flush_books():
            if event.kind != "book":
                continue
            version += 1
            assert market.books[INST.id].version == version
            for side, changes in zip((BID, ASK), event.data, strict=True):
                for price, qty in changes:
                    if qty:
                        seen[side][price] = qty
                    else:
                        del seen[side][price]  # only levels the client holds are ever removed
        assert sorted(seen[BID].items(), reverse=True) == _top(full[BID], depth, True)
        assert sorted(seen[ASK].items()) == _top(full[ASK], depth, False)


def test_a_delta_for_a_book_never_loaded_is_reported_not_applied() -> None:
    market = Market(20)
    events = list(market.apply([protocol.OrderBookDelta(INST.id, 0, 0, 0, 0, ((100, 1, BID),))], 1))
    assert [e.kind for e in events] == ["unnamed", "unsynced"] and INST.id not in market.books
    list(market.apply([protocol.mapping_for(INST)], 2))
    events = list(market.apply([protocol.OrderBookDelta(INST.id, 0, 0, 0, 0, ((100, 1, BID),))], 3))
    assert [e.kind for e in events] == ["unsynced"]


def test_a_mapping_that_does_not_hash_to_its_id_is_refused() -> None:
    with pytest.raises(protocol.InstrumentError):
        list(Market(20).apply([protocol.InstrumentMapping(12345, INST.canonical)], 1))


@pytest.mark.parametrize("text, instrument_id, symbol", [
    ("*", 0, ""),
    ("sim_a:BTC-USD", INST.id, ""),
    ("spot|sim_a|BTC|USD", INST.id, ""),
    ("btc/usd", 0, "BTC-USD"),
    ("AAPL", 0, "AAPL"),
])
def test_subscription_patterns(text: str, instrument_id: int, symbol: str) -> None:
    from nodes._websocket._wire import Pattern

    pattern = Pattern.parse(text)
    assert (pattern.instrument_id, pattern.symbol) == (instrument_id, symbol)
    assert pattern.matches(INST.id, "BTC-USD") == (text != "AAPL")


def test_a_book_nobody_watches_is_viewed_only_once_someone_does() -> None:
    """Without a client watching it, a book's changes wait (no view recomputed per message); the
    view is brought up to date, once, when it is shown, and is the true top N then."""
    market = Market(3)
    list(market.apply([protocol.mapping_for(INST)], 1))
    full = {BID: {100 - k: k for k in range(1, 8)}, ASK: {100 + k: k for k in range(1, 8)}}
    list(market.apply([protocol.OrderBook(INST.id, 0, 0, tuple(sorted(full[BID].items(), reverse=True)),
                                          tuple(sorted(full[ASK].items())))], 1))
    nobody, everybody = (lambda iid: False), (lambda iid: True)
    book = market.books[INST.id]
    rng = random.Random(7)
    for step in range(50):
        side = rng.choice((BID, ASK))
        price = 100 - rng.randint(1, 9) if side == BID else 100 + rng.randint(1, 9)
        qty = rng.choice((0, rng.randint(1, 9)))
        full[side][price] = qty
        if not qty:
            del full[side][price]
        list(market.apply([protocol.OrderBookDelta(INST.id, 0, 0, 0, 0, ((price, qty, side),))], step))
        assert list(market.flush_books(nobody)) == []
    assert book.version == 0  # never viewed
    assert market.best(INST.id) == (_top(full[BID], 1, True)[0], _top(full[ASK], 1, False)[0])  # caught up
    assert book.version == 1
    assert book.bid_view == _top(full[BID], 3, True) and book.ask_view == _top(full[ASK], 3, False)
    market.catch_up(INST.id)
    assert book.version == 1  # nothing pending: nothing recomputed
    list(market.apply([protocol.OrderBookDelta(INST.id, 0, 0, 0, 0, ((99, 50, BID),))], 99))
    assert [e.kind for e in market.flush_books(everybody)] == ["book", "bbo"]  # watched: as before

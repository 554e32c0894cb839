"""Helpers shared by the exchange adapter tests: what a downstream consumer makes of the output."""

from __future__ import annotations

from collections.abc import Iterable

from alphapulse import protocol
from alphapulse.testing import Published

Book = tuple[dict[int, int], dict[int, int]]
"""One instrument's book as a consumer holds it: (bids, asks), price -> qty, indexed by BookSide."""


def consumer_books(messages: Iterable[Published]) -> dict[int, Book]:
    """The books a consumer holds after applying the published OrderBooks and OrderBookDeltas in
    order (a removal of a level it never had is ignored, as the adapters allow it), by instrument id."""
    books: dict[int, Book] = {}
    for m in messages:
        for rec in m.tlvs:
            if isinstance(rec, protocol.OrderBook):
                books[rec.instrument_id] = (dict(rec.bids), dict(rec.asks))
            elif isinstance(rec, protocol.OrderBookDelta):
                for price, qty, side in rec.changes:
                    if qty:
                        books[rec.instrument_id][side][price] = qty
                    else:
                        books[rec.instrument_id][side].pop(price, None)
    return books

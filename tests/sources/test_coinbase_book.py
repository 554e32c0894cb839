"""The Coinbase book and the l2 scanner, sans-IO: against simple reference models."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import numpy as np
import pytest

from nodes._coinbase import _scan
from nodes._coinbase._book import ASK, BID, CHANGE_DTYPE, Book
from nodes._coinbase._feed import BadFrame, _parse_time_slow, parse_time_ns


def arrays(changes):
    sides = np.array([c[0] for c in changes], np.uint8)
    prices = np.array([c[1] for c in changes], np.int64)
    qtys = np.array([c[2] for c in changes], np.int64)
    return sides, prices, qtys


def top(model: dict[int, int], side: int, depth: int) -> list[tuple[int, int]]:
    return sorted(model.items(), reverse=side == BID)[:depth]


@pytest.mark.parametrize("seed", range(6))
def test_book_and_view_deltas_match_a_dict_model(seed: int) -> None:
    """Random updates near the top: the full book equals a dict model, and a consumer that applies
    the published deltas to the snapshot's top-N holds exactly the model's top-N."""
    rng = random.Random(seed)
    depth = rng.choice([1, 3, 10])
    model = {BID: {p: rng.randint(1, 9) for p in range(900, 1000, 2)},
             ASK: {p: rng.randint(1, 9) for p in range(1001, 1100, 2)}}
    book = Book(depth, capacity=4)
    book.load(*arrays([(s, p, q) for s in (BID, ASK) for p, q in model[s].items()]))
    view = {s: dict(top(model[s], s, depth)) for s in (BID, ASK)}
    for _ in range(300):
        changes = []
        for _ in range(rng.randint(1, 6)):
            side = rng.choice((BID, ASK))
            price = rng.randint(950, 1000) if side == BID else rng.randint(1001, 1050)
            qty = 0 if rng.random() < 0.4 else rng.randint(1, 9)
            changes.append((side, price, qty))
            if qty:
                model[side][price] = qty
            else:
                model[side].pop(price, None)
        packed, _ = book.apply(*arrays(changes))
        for price, qty, side in np.frombuffer(packed, CHANGE_DTYPE).tolist():
            if qty:
                view[side][price] = qty
            else:
                view[side].pop(price, None)
        for s in (BID, ASK):
            assert book.as_dict(s) == model[s]
            assert sorted(view[s].items(), reverse=s == BID) == top(model[s], s, depth)
    assert not book.crossed() or max(model[BID]) >= min(model[ASK])


def test_load_keeps_the_last_duplicate_and_drops_zero_levels() -> None:
    book = Book(10)
    book.load(*arrays([(BID, 100, 1), (BID, 100, 5), (BID, 99, 0), (ASK, 101, 2), (ASK, 102, 3)]))
    assert book.as_dict(BID) == {100: 5}
    assert book.side(ASK).tolist() == [[101, 2], [102, 3]]
    assert book.best() == (100, 5, 101, 2)
    assert not book.crossed()
    book.apply(*arrays([(BID, 101, 1)]))
    assert book.crossed()


def test_unknown_removal_is_counted_not_applied() -> None:
    book = Book(10)
    book.load(*arrays([(BID, 100, 1), (ASK, 101, 2)]))
    packed, unknown = book.apply(*arrays([(BID, 50, 0), (ASK, 101, 2)]))
    assert unknown == 1 and packed == b""  # unchanged quantity: nothing to publish


def scan_text(text: str):
    raw = text.encode()
    n, sides, prices, qtys, times = _scan.scan(np.frombuffer(raw, np.uint8), 0, len(raw))
    return n, list(zip(sides.tolist(), prices.tolist(), qtys.tolist(), times.tolist(), strict=True))


LEVEL = '{"side":"offer","event_time":"2026-08-09T21:05:48.170326Z","price_level":"65083.67","new_quantity":"0.5"}'


def test_scanner_reads_the_documented_shape_in_any_order_and_spacing() -> None:
    ts = parse_time_ns("2026-08-09T21:05:48.170326Z")
    spaced = ' { "new_quantity" : "0.00000000" ,\n "price_level":"1", "x":"y", "side":"bid", "event_time":"' \
             '2026-08-09T21:05:48.170326Z"}'
    n, levels = scan_text(LEVEL + "," + spaced)
    assert n == 2
    assert levels == [(1, 6508367000000, 50000000, ts), (0, 100000000, 0, ts)]
    assert scan_text("")[0] == 0


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (LEVEL.replace('"offer"', '"ask"'), _scan.BAD_SIDE),
        (LEVEL.replace('"0.5"', '"0.123456789"'), _scan.BAD_NUMBER),
        (LEVEL.replace('"0.5"', '"-1"'), _scan.BAD_NUMBER),
        (LEVEL.replace('"0.5"', '"1e3"'), _scan.BAD_NUMBER),
        (LEVEL.replace("48.170326Z", "48.170326+00:00"), _scan.BAD_TIME),
        (LEVEL.replace('"0.5"', "0.5"), _scan.BAD_STRUCTURE),
        (LEVEL.replace("offer", "off\\u0065r"), _scan.BAD_STRUCTURE),
        (LEVEL + ",", _scan.BAD_STRUCTURE),
        (LEVEL.replace('"side":"offer",', ""), _scan.MISSING_FIELD),
    ],
)
def test_scanner_refuses_anything_else(text: str, code: int) -> None:
    """Refusals send the frame to the generic json path, which reports the exact error."""
    assert scan_text(text)[0] == code


def test_scanner_accepts_trailing_zero_decimals() -> None:
    n, levels = scan_text(LEVEL.replace('"0.5"', '"0.1234567800"'))
    assert n == 1 and levels[0][2] == 12345678


@pytest.mark.parametrize(
    "text",
    ["2026-08-09T21:05:48.483587501Z", "2026-08-09T21:05:48Z", "2021-04-17T16:43:37.075351Z",
     "2024-02-29T23:59:59.9Z", "1970-01-01T00:00:00Z"],
)
def test_times_are_exact_on_every_path(text: str) -> None:
    from datetime import datetime

    whole = datetime.fromisoformat(text.replace("Z", "+00:00").split(".")[0])
    frac = text[:-1].partition(".")[2]
    expected = int(whole.timestamp()) * 10**9 + int(frac.ljust(9, "0") or 0)
    assert parse_time_ns(text) == parse_time_ns(text) == _parse_time_slow(text) == expected
    assert _scan.time_ns(text) == expected


@pytest.mark.parametrize("text", ["2026-13-01T00:00:00Z", "yesterday", None, 5, "2026-08-09T21:05:48.1234567890Z"])
def test_bad_times_raise_bad_frame(text) -> None:
    with pytest.raises(BadFrame):
        parse_time_ns(text)


def test_scanner_handles_a_real_update_frame(shared_data) -> None:
    from alphapulse.captures import received_frames

    frame = next(f for f in received_frames(shared_data / "coinbase_advanced" / "COINBASE.jsonl.zst")
                 if '"l2_data"' in f[:40] and '"update"' in f[:200])
    updates = json.loads(frame)["events"][0]["updates"]
    raw = frame.encode()
    start = raw.index(b'"updates":[') + len(b'"updates":[')
    n, sides, prices, qtys, times = _scan.scan(np.frombuffer(raw, np.uint8), start, raw.index(b"]", start))
    assert n == len(updates)
    assert sides.tolist() == [0 if u["side"] == "bid" else 1 for u in updates]
    assert times.tolist() == [parse_time_ns(u["event_time"]) for u in updates]
    assert prices.tolist() == [int(Decimal(u["price_level"]) * 10**8) for u in updates]
    assert qtys.tolist() == [int(Decimal(u["new_quantity"]) * 10**8) for u in updates]

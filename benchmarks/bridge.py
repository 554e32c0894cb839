"""The WebSocket bridge's handler cost per book delta, with and without a client watching the book.

Run: ``python benchmarks/bridge.py`` (or ``python -m benchmarks.bridge``). One instrument, a
200-level book each side, 20 000 one-change deltas near the top (the shape of the demo's feeds),
each taken as the bridge takes a delivered message (``Bridge.take_message``, then ``flush``). Two
rounds in the same process, best of five each:

* ``watched``: a client watches the book, so every delta that may move the top 20 recomputes the
  view and routes its change (what every delta cost before the bridge deferred unwatched views);
* ``unwatched``: nobody watches (a server whose dashboard is closed): the changes wait, and the
  view is recomputed once when someone looks (``Market.catch_up``), measured here as one call.

The last line is one JSON object of all figures.
"""

from __future__ import annotations

import logging
import pathlib
import random
import sys
import time
from collections import Counter

if not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from alphapulse import protocol
from benchmarks._common import best_rate, report
from nodes._websocket._bridge import Bridge

DELTAS = 20_000
DEPTH = 20


def frames() -> list[bytes]:
    instrument = protocol.spot("sim_a", "BTC", "USD")
    bid, ask = protocol.BookSide.BID, protocol.BookSide.ASK
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, 1)
    out = [builder.build(protocol.mapping_for(instrument), 1),
           builder.build(protocol.OrderBook(instrument.id, 0, 1,
                                            tuple((10**8 * (1000 - k), 5) for k in range(200)),
                                            tuple((10**8 * (1001 + k), 5) for k in range(200))), 1)]
    rng = random.Random(1)
    for i in range(DELTAS):
        side = rng.choice((bid, ask))
        level = (1000 - rng.randint(0, 30)) if side == bid else (1001 + rng.randint(0, 30))
        out.append(builder.build(protocol.OrderBookDelta(instrument.id, 0, 2 + i, 1 + i, 0,
                                                         ((10**8 * level, rng.randint(0, 9), side),)), 1))
    return out


def bridge_over(stream: list[bytes], watched: bool) -> tuple[Bridge, list[memoryview]]:
    bridge = Bridge(DEPTH, Counter(), logging.getLogger("bench"), lambda source, instrument: None)
    if watched:
        bridge._watched = lambda instrument_id: True  # as with a client subscribed to the book
    for frame in stream[:2]:
        bridge.take_message(memoryview(frame), 3, 1, 0.0)
        bridge.flush()
    return bridge, [memoryview(f) for f in stream[2:]]


def deltas_per_second(bridge: Bridge, views: list[memoryview]) -> float:
    def run() -> None:
        take, flush = bridge.take_message, bridge.flush
        for view in views:
            take(view, 3, 1, 0.0)
            flush()
    return best_rate(run, len(views))


def main() -> None:
    stream = frames()
    figures: dict[str, float | int | str] = {"deltas": DELTAS, "depth": DEPTH}
    for mode in ("watched", "unwatched"):
        bridge, views = bridge_over(stream, watched=mode == "watched")
        rate = deltas_per_second(bridge, views)
        figures[f"{mode}_deltas_per_s"] = round(rate)
        figures[f"{mode}_us_per_delta"] = round(1e6 / rate, 2)
        if mode == "unwatched":  # the book is pending now: what showing it costs, once
            instrument = next(iter(bridge.market.books))
            started = time.perf_counter()
            bridge.market.catch_up(instrument)
            figures["catch_up_us"] = round((time.perf_counter() - started) * 1e6, 1)
    figures["ratio_unwatched_vs_watched_cost"] = round(figures["unwatched_us_per_delta"]
                                                       / figures["watched_us_per_delta"], 3)
    report(figures)


if __name__ == "__main__":
    main()

"""Order-book kernels and transform.book_delta on real captures.

Run: ``python benchmarks/book.py [--quick]``. Measures, in one run:

* delta compute (diff of two successive top-N books) and delta apply, book pairs per second, at
  depth 10, 50, 500, 5000: the numba kernels called once per pair and once for many pairs,
  against a pure-Python dict reference (price -> qty) measured here on the same books;
* cold start of a fresh process (import + first block through the node) with an empty
  NUMBA_CACHE_DIR against a warm one (the kernels are ``cache=True``);
* compression on the real Coinbase Advanced Trade and Kraken captures, parsed here with plain
  json into OrderBook / OrderBookDelta frames and run through the node at several depths:
  bytes of the deltas it emitted / bytes of the full top-N snapshots that would otherwise have
  been sent at each update that changed the top-N (and at every update), plus updates/s.

The last line is one JSON object of all figures.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

if not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import alphapulse.protocol as P
from alphapulse.runtime import BreakerSettings, NodeContext
from benchmarks._common import report
from nodes.book_delta import BookDelta, BookDeltaParams, apply_side, diff_book

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("ALPHAPULSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEPTHS = (10, 50, 500, 5000)


# -- synthetic book histories ------------------------------------------------------------------
def history(depth: int, pairs: int, seed: int = 1) -> list[tuple[dict[int, int], dict[int, int]]]:
    """Successive books of exactly ``depth`` levels per side; each update changes 1-4 levels,
    mostly near the top (quantity changes, and a level replaced: one removed, one inserted)."""
    rng = random.Random(seed)
    tick = 1_000_000  # 0.01 in fixed point
    mid = 50_000 * 100_000_000
    bids = {mid - (1 + i) * tick: rng.randint(1, 10**9) for i in range(depth)}
    asks = {mid + (1 + i) * tick: rng.randint(1, 10**9) for i in range(depth)}
    states = [(dict(bids), dict(asks))]
    for _ in range(pairs):
        for _ in range(rng.randint(1, 4)):
            side, best = (bids, True) if rng.random() < 0.5 else (asks, False)
            ordered = sorted(side, reverse=best)
            index = min(int(rng.expovariate(1 / max(1.0, depth / 8))), depth - 1)
            if rng.random() < 0.7:
                side[ordered[index]] = rng.randint(1, 10**9)
            else:
                del side[ordered[index]]
                while True:
                    step = rng.randint(1, 2 * depth + 2) * tick
                    price = mid - step if best else mid + step
                    if price not in side:
                        side[price] = rng.randint(1, 10**9)
                        break
                if len(side) > depth:  # keep exactly depth levels (the worst one falls off)
                    del side[min(side) if best else max(side)]
        states.append((dict(bids), dict(asks)))
    return states


def as_arrays(states, depth):
    """keys (asks as is, bids negated: both ascending = best first), qtys, counts."""
    m = len(states)
    keys = np.zeros((m, 2, depth), np.int64)
    qtys = np.zeros((m, 2, depth), np.int64)
    n = np.zeros((m, 2), np.int64)
    for i, (bids, asks) in enumerate(states):
        for side, levels in ((0, bids), (1, asks)):
            items = sorted(levels.items(), reverse=side == 0)[:depth]
            n[i, side] = len(items)
            for j, (price, qty) in enumerate(items):
                keys[i, side, j] = -price if side == 0 else price
                qtys[i, side, j] = qty
    return keys, qtys, n


# -- numba batch drivers (many pairs in one call) ----------------------------------------------
@njit  # not cached: numba would not notice a change to the kernels it calls in nodes/book_delta.py
def diff_many(keys, qtys, n, depth, ch_price, ch_qty, ch_side):
    total = 0
    for i in range(keys.shape[0] - 1):
        total += diff_book(keys[i], qtys[i], n[i], keys[i + 1], qtys[i + 1], n[i + 1], depth, ch_price, ch_qty,
                           ch_side)
    return total


@njit  # not cached: numba would not notice a change to the kernels it calls in nodes/book_delta.py
def collect_deltas(keys, qtys, n, depth, ch_price, ch_qty, ch_side, out_key, out_qty, out_side, starts):
    """Every pair's delta, back to back in key space (bids negated), for the apply benchmark."""
    pos = 0
    for i in range(keys.shape[0] - 1):
        c = diff_book(keys[i], qtys[i], n[i], keys[i + 1], qtys[i + 1], n[i + 1], depth, ch_price, ch_qty,
                      ch_side)
        starts[i] = pos
        for x in range(c):
            out_key[pos] = -ch_price[x] if ch_side[x] == 0 else ch_price[x]
            out_qty[pos] = ch_qty[x]
            out_side[pos] = ch_side[x]
            pos += 1
    starts[keys.shape[0] - 1] = pos
    return pos


@njit  # not cached: numba would not notice a change to the kernels it calls in nodes/book_delta.py
def apply_one(bk, bq, bn, trunc, ck, cq, cs, a, b, tk, tq, counts):
    """Apply one delta (changes a..b, sorted by side then key) to a book in place."""
    split = a
    while split < b and cs[split] == 0:
        split += 1
    for side in range(2):
        lo = a if side == 0 else split
        hi = split if side == 0 else b
        if hi > lo:
            m, t = apply_side(bk[side], bq[side], bn[side], trunc[side], ck[lo:hi], cq[lo:hi], hi - lo, tk, tq,
                              counts)
            bn[side] = m
            trunc[side] = t


@njit  # not cached: numba would not notice a change to the kernels it calls in nodes/book_delta.py
def apply_many(bk, bq, bn, trunc, ck, cq, cs, starts, tk, tq, counts):
    for i in range(starts.shape[0] - 1):
        apply_one(bk, bq, bn, trunc, ck, cq, cs, starts[i], starts[i + 1], tk, tq, counts)


# -- pure-Python dict reference -----------------------------------------------------------------
def dict_diff(old, new, depth):
    """Changes from one top-N (price -> qty dicts) to the next."""
    changes = []
    for side in (0, 1):
        o, n = old[side], new[side]
        for price, qty in n.items():
            if o.get(price) != qty:
                changes.append((price, qty, side))
        for price in o:
            if price not in n:
                changes.append((price, 0, side))
    return changes


def dict_apply(book, changes):
    for price, qty, side in changes:
        levels = book[side]
        if qty:
            levels[price] = qty
        else:
            del levels[price]


def best_rate(run, setup, pairs: int, chunk: int, repeats: int = 5) -> float:
    """Pairs per second, from the best of ``repeats`` runs of each chunk of pairs (so a busy
    machine's slow moments drop out; every implementation is timed the same way)."""
    total = 0.0
    for lo in range(0, pairs, chunk):
        hi = min(pairs, lo + chunk)
        best = float("inf")
        for _ in range(repeats):
            state = setup(lo)
            t0 = time.perf_counter()
            run(lo, hi, state)
            best = min(best, time.perf_counter() - t0)
        total += best
    return pairs / total


def kernels(depth: int, pairs: int) -> dict[str, float]:
    states = history(depth, pairs)
    tops = [(dict(sorted(b.items(), reverse=True)[:depth]), dict(sorted(a.items())[:depth])) for b, a in states]
    keys, qtys, n = as_arrays(states, depth)
    room = 4 * depth + 8
    ch_price, ch_qty, ch_side = np.empty(room, np.int64), np.empty(room, np.int64), np.empty(room, np.uint8)
    total = pairs * room
    ck, cq, cs = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.uint8)
    starts = np.zeros(pairs + 1, np.int64)
    collect_deltas(keys, qtys, n, depth, ch_price, ch_qty, ch_side, ck, cq, cs, starts)
    views = [(keys[i], qtys[i], n[i]) for i in range(pairs + 1)]
    ref_changes = [dict_diff(tops[i], tops[i + 1], depth) for i in range(pairs)]
    assert sum(map(len, ref_changes)) == starts[-1], "numba and dict deltas differ in size"
    tk, tq, counts = np.empty(depth, np.int64), np.empty(depth, np.int64), np.zeros(3, np.int64)

    def nothing(lo):
        return None

    def numba_diff_single(lo, hi, _):
        for i in range(lo, hi):
            a, b = views[i], views[i + 1]
            diff_book(a[0], a[1], a[2], b[0], b[1], b[2], depth, ch_price, ch_qty, ch_side)

    def numba_diff_batch(lo, hi, _):
        diff_many(keys[lo : hi + 1], qtys[lo : hi + 1], n[lo : hi + 1], depth, ch_price, ch_qty, ch_side)

    def dict_diff_all(lo, hi, _):
        for i in range(lo, hi):
            dict_diff(tops[i], tops[i + 1], depth)

    def fresh_book(lo):
        return keys[lo].copy(), qtys[lo].copy(), n[lo].copy(), np.zeros(2, np.bool_)

    def fresh_dicts(lo):
        return dict(tops[lo][0]), dict(tops[lo][1])

    def numba_apply_single(lo, hi, book):
        bk, bq, bn, trunc = book
        for i in range(lo, hi):
            apply_one(bk, bq, bn, trunc, ck, cq, cs, starts[i], starts[i + 1], tk, tq, counts)

    def numba_apply_batch(lo, hi, book):
        bk, bq, bn, trunc = book
        apply_many(bk, bq, bn, trunc, ck, cq, cs, starts[lo : hi + 1], tk, tq, counts)

    def dict_apply_all(lo, hi, book):
        for i in range(lo, hi):
            dict_apply(book, ref_changes[i])

    # warm up, and check every implementation lands on the last book
    numba_diff_single(0, 2, None), numba_diff_batch(0, 2, None)
    for fn in (numba_apply_single, numba_apply_batch):
        book = fresh_book(0)
        fn(0, pairs, book)
        assert np.array_equal(book[0], keys[-1]) and np.array_equal(book[1], qtys[-1]), fn.__name__
    book = fresh_dicts(0)
    dict_apply_all(0, pairs, book)
    assert book == tops[-1]
    chunk = max(20, 20_000 // depth)
    rates = {}
    for name, fn in (("numba_single", numba_diff_single), ("numba_batch", numba_diff_batch),
                     ("dict", dict_diff_all)):
        rates[f"diff_{name}"] = best_rate(fn, nothing, pairs, chunk)
    for name, fn, setup in (("numba_single", numba_apply_single, fresh_book),
                            ("numba_batch", numba_apply_batch, fresh_book), ("dict", dict_apply_all, fresh_dicts)):
        rates[f"apply_{name}"] = best_rate(fn, setup, pairs, chunk)
    rates["changes_per_pair"] = round(float(starts[-1]) / pairs, 2)
    return rates


# -- cold start -----------------------------------------------------------------------------------
COLD_SCRIPT = r"""
import json, logging, time
t0 = time.perf_counter()
from alphapulse import protocol as P
from alphapulse.runtime import BreakerSettings, NodeContext
from nodes.book_delta import BookDelta, BookDeltaParams
t1 = time.perf_counter()
inst = P.spot("kraken", "BTC", "USD")
b = P.MessageBuilder(1, 5, (1 << 40) | 1)
data = b.build(P.OrderBook(inst.id, 1, 1, ((10**10, 1), (9 * 10**9, 2)), ((11 * 10**9, 1),)), 1)
data += b.build(P.OrderBookDelta(inst.id, 2, 2, 1, 0, ((10**10, 0, 0),)), 2)
ctx = NodeContext(name="b", kind="transform.book_delta", source_id=9, relay_domain=1,
                  log=logging.getLogger("b"), breaker_settings=BreakerSettings())
node = BookDelta(BookDeltaParams(depth=10))
node.handle_block(P.FrameBlock.from_bytes(data), ctx)
node.snapshot(0)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_block_s": t2 - t1}))
"""


def cold_start(warm_runs: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}

        def run():
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, cwd=ROOT, check=True,
                                  capture_output=True, text=True)
            inner = json.loads(done.stdout.strip().splitlines()[-1])
            return {**inner, "process_s": time.perf_counter() - t0}

        cold = run()
        warm = min((run() for _ in range(warm_runs)), key=lambda r: r["process_s"])
    return {
        "cold_start_no_cache_first_block_s": round(cold["first_block_s"], 3),
        "cold_start_no_cache_process_s": round(cold["process_s"], 3),
        "cold_start_cached_first_block_s": round(warm["first_block_s"], 3),
        "cold_start_cached_process_s": round(warm["process_s"], 3),
        "cold_start_cache_speedup_first_block": round(cold["first_block_s"] / warm["first_block_s"], 1),
    }


# -- real captures --------------------------------------------------------------------------------
def fixed(text: str) -> int:
    return P.parse_fixed(text)


def coinbase_updates(path: pathlib.Path):
    """(instrument, 'snapshot'|'update', bids, asks, raw frame bytes) from Coinbase Advanced l2_data."""
    import zstandard

    with path.open("rb") as f:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8").read()
    for line in text.splitlines()[1:]:
        row = json.loads(line)
        if row.get("t") != "recv":
            continue
        frame = json.loads(row["data"])
        if frame.get("channel") != "l2_data":
            continue
        raw = len(row["data"].encode())
        for event in frame["events"]:
            base, quote = event["product_id"].split("-")
            bids, asks = [], []
            for u in event["updates"]:
                (bids if u["side"] == "bid" else asks).append((fixed(u["price_level"]), fixed(u["new_quantity"])))
            yield P.spot("coinbase", base, quote), event["type"], bids, asks, raw
            raw = 0


def kraken_updates(path: pathlib.Path):
    """The same from Kraken WS v1 ``book-1000`` frames (snapshots ``as``/``bs``, updates ``a``/``b``)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        _, sep, body = line.partition(": ")
        if not sep or not body.startswith("["):
            continue
        frame = json.loads(body)
        pair = frame[-1]
        base, quote = pair.split("/")
        bids, asks, kind = [], [], "update"
        for part in frame[1:-2]:
            if "as" in part or "bs" in part:
                kind = "snapshot"
            for key, side in (("as", asks), ("a", asks), ("bs", bids), ("b", bids)):
                side.extend((fixed(level[0]), fixed(level[1])) for level in part.get(key, ()))
        yield P.spot("kraken", base, quote), kind, bids, asks, len(body.encode())


def frames_of(updates, max_levels: int = 2047):
    """Upstream messages as an adapter would send them: a mapping per instrument, OrderBook snapshots
    (best ``max_levels`` per side, what one TLV holds) and one OrderBookDelta per update event."""
    builder = P.MessageBuilder(1, 5, (1 << 40) | 1)
    seq: dict[int, int] = {}
    frames, raw_bytes, seen = [], 0, set()
    for inst, kind, bids, asks, raw in updates:
        raw_bytes += raw
        if inst.id not in seen:
            seen.add(inst.id)
            frames.append(builder.build(P.mapping_for(inst), 1))
        s = seq[inst.id] = seq.get(inst.id, 0) + 1
        if kind == "snapshot":
            top_bids = tuple(sorted(((p, q) for p, q in bids if q), reverse=True)[:max_levels])
            top_asks = tuple(sorted((p, q) for p, q in asks if q)[:max_levels])
            record = P.OrderBook(inst.id, s, s, top_bids, top_asks)
        else:
            changes = tuple((p, q, 0) for p, q in bids) + tuple((p, q, 1) for p, q in asks)
            record = P.OrderBookDelta(inst.id, s, s, s - 1, 0, changes)
        frames.append(builder.build(record, s))
    return frames, raw_bytes


def run_node(frames, depth: int, per_block: int):
    node = BookDelta(BookDeltaParams(depth=depth, snapshot_interval=0))
    ctx = NodeContext(name="books", kind="transform.book_delta", source_id=9, relay_domain=1,
                      log=logging.getLogger("bench.books"), breaker_settings=BreakerSettings())
    blocks = [P.FrameBlock.from_bytes(b"".join(frames[i : i + per_block])) for i in range(0, len(frames), per_block)]
    t0 = time.perf_counter()
    for block in blocks:
        node.handle_block(block, ctx)
        ctx._pending.clear()
        ctx._pending_count = 0
    return node, ctx, time.perf_counter() - t0


def compression(name: str, frames, raw_bytes: int, depths=(10, 50, 100)) -> dict[str, float | int]:
    figures: dict[str, float | int] = {f"{name}_messages": len(frames), f"{name}_venue_json_bytes": raw_bytes}
    for depth in depths:
        node, ctx, _ = run_node(frames, depth, per_block=64)
        stats = node.statistics()["instruments"]
        delta = sum(s["delta_bytes"] for s in stats.values())
        snap = sum(s["snapshot_bytes"] for s in stats.values())
        every = int(node.books.acct[: node.books.size, 2].sum())
        figures[f"{name}_d{depth}_updates"] = ctx.counters["updates"]
        figures[f"{name}_d{depth}_updates_changing_top"] = ctx.counters["updates"] - ctx.counters["updates.unchanged"]
        figures[f"{name}_d{depth}_delta_bytes"] = delta
        figures[f"{name}_d{depth}_ratio_vs_snapshot_per_change"] = round(delta / snap, 5)
        figures[f"{name}_d{depth}_ratio_vs_snapshot_per_update"] = round(delta / every, 5)
        figures[f"{name}_d{depth}_reduction_pct"] = round(100 * (1 - delta / snap), 3)
        figures[f"{name}_d{depth}_delta_vs_venue_json"] = round(delta / raw_bytes, 5)
        worst = max((s["compression_ratio"] or 0) for s in stats.values())
        figures[f"{name}_d{depth}_worst_instrument_ratio"] = worst
        if depth == 50:
            print(f"  {name} depth 50 per instrument:")
            for inst, s in sorted(stats.items()):
                print(f"    {inst:>22}: {s['updates']:5d} updates, ratio {s['compression_ratio']}")
            for per_block in (1, 64):
                _, _, seconds = run_node(frames, depth, per_block)
                figures[f"{name}_d50_node_msgs_per_s_block{per_block}"] = round(len(frames) / seconds)
    return figures


def main(quick: bool = False) -> dict[str, float | int | str]:
    figures: dict[str, float | int | str] = {}
    for depth in DEPTHS:
        pairs = max(100, min(20_000, 400_000 // depth)) // (4 if quick else 1)
        rates = kernels(depth, pairs)
        print(f"depth {depth}: {pairs} book pairs, {rates['changes_per_pair']} changes per pair")
        for key, value in rates.items():
            figures[f"d{depth}_{key}" + ("" if key == "changes_per_pair" else "_pairs_per_s")] = (
                value if key == "changes_per_pair" else round(value))
        for op in ("diff", "apply"):
            for mode in ("single", "batch"):
                figures[f"d{depth}_{op}_numba_{mode}_vs_dict"] = round(
                    rates[f"{op}_numba_{mode}"] / rates[f"{op}_dict"], 1)
        figures[f"d{depth}_diff_numba_single_us"] = round(1e6 / rates["diff_numba_single"], 3)
        figures[f"d{depth}_diff_numba_batch_us"] = round(1e6 / rates["diff_numba_batch"], 3)
    figures["goal_diff_d50_30x_dict"] = "yes" if figures["d50_diff_numba_single_vs_dict"] >= 30 else (
        "batch only" if figures["d50_diff_numba_batch_vs_dict"] >= 30 else "NO")
    print("cold start (fresh processes) ...")
    figures.update(cold_start())
    coinbase = DATA / "coinbase_advanced" / "COINBASE.jsonl.zst"
    kraken = DATA / "kraken" / "KRAKEN.ws.50.0"
    if coinbase.exists():
        figures.update(compression("coinbase_adv", *frames_of(coinbase_updates(coinbase))))
    if kraken.exists():
        figures.update(compression("kraken", *frames_of(kraken_updates(kraken))))
    figures["seed_claim_reduction_pct"] = 99.975
    return figures


if __name__ == "__main__":
    report(main(quick="--quick" in sys.argv))

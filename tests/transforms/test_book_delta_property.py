"""Property: the emitted deltas, applied downstream, reproduce the tracked book exactly.

Random upstream histories (snapshots, deltas with removals, unknown removals, duplicate prices,
levels crossing the depth boundary, lost messages) go through the node as real frames; a
downstream model built only from what the node emitted must equal the node's published book
after every block, and whenever the node calls a book live, that book is the true top-N.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphapulse import protocol as P
from nodes.book_delta import LIVE, BookDelta, BookDeltaParams
from tests.transforms import Downstream, Upstream, context, feed, input_link, top

INST = P.spot("kraken", "BTC", "USD")
U = 100_000_000

prices = st.integers(1, 40).map(lambda p: p * U)
levels = st.dictionaries(prices, st.integers(1, 5), max_size=25)
change = st.tuples(prices, st.integers(0, 5), st.integers(0, 1))
op = st.one_of(
    st.tuples(st.just("delta"), st.lists(change, min_size=1, max_size=8)),
    st.tuples(st.just("delta"), st.lists(change, min_size=60, max_size=90)),  # merge-sort path
    st.tuples(st.just("lost"), st.lists(change, min_size=1, max_size=4)),
    st.tuples(st.just("snapshot"), st.none()),
    st.tuples(st.just("jump"), st.tuples(levels, levels)),
)


def as_book(bids: dict, asks: dict, seq: int) -> P.OrderBook:
    return P.OrderBook(INST.id, seq, seq, tuple(sorted(bids.items(), reverse=True)), tuple(sorted(asks.items())))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.integers(1, 5),
    extra=st.integers(0, 4),
    first=st.tuples(levels, levels),
    ops=st.lists(op, max_size=30),
    per_block=st.integers(1, 3),
)
def test_emitted_deltas_reproduce_the_tracked_book(depth, extra, first, ops, per_block):
    node = BookDelta(BookDeltaParams(depth=depth, extra_levels=extra))
    ctx = context(link=input_link())
    up = Upstream()
    down = Downstream()
    ref = (dict(first[0]), dict(first[1]))  # the venue's true full book
    seq = 1
    pending = [as_book(*ref, seq)]
    hidden_loss = False  # a lost message no later message has revealed yet: the node cannot know
    for kind, arg in ops:
        if kind in ("delta", "lost"):
            seq += 1
            for price, qty, side in arg:
                if qty:
                    ref[side][price] = qty
                else:
                    ref[side].pop(price, None)
            hidden_loss = kind == "lost"
            if kind == "delta":
                pending.append(P.OrderBookDelta(INST.id, seq, seq, seq - 1, 0, tuple(arg)))
        else:
            hidden_loss = False
            if kind == "jump":
                ref = (dict(arg[0]), dict(arg[1]))
            seq += 1
            pending.append(as_book(*ref, seq))
        if len(pending) >= per_block:
            check(node, ctx, up, down, pending, ref, depth, hidden_loss)
            pending = []
    if pending:
        check(node, ctx, up, down, pending, ref, depth, hidden_loss)


def check(node, ctx, up, down, messages, ref, depth, hidden_loss):
    down.apply(feed(node, ctx, up.block(*messages)))
    slot = node.books.slot_of[INST.id]
    published = node.books.published(slot)
    assert down.levels(INST.id) == published
    assert all(len(side) <= depth for side in published)
    if node.books.state[slot] == LIVE and not hidden_loss:
        assert published == (top(ref[0], depth, bids=True), top(ref[1], depth, bids=False))

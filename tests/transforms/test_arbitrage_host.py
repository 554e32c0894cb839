"""transform.arbitrage in a real NodeHost: market data in over a Unix socket, signals out over another."""

from __future__ import annotations

import trio

import nodes.arbitrage  # noqa: F401  (registers the kind)
from alphapulse import protocol as P
from alphapulse.runtime import InputLink, InputSpec, NodeHost, open_publisher
from tests.transforms import Upstream, wait_for

A = P.spot("venue_a", "ETH", "USD")
B = P.spot("venue_b", "ETH", "USD")
U = 100_000_000


async def test_arbitrage_node_over_real_sockets(sockets) -> None:
    requests: list = []
    plan = {"nodes": {"arb": {
        "kind": "transform.arbitrage", "module": "nodes.arbitrage", "source_id": 88,
        "relay_domain": int(P.RelayDomain.SIGNAL),
        "sockets": {"data": sockets["data"], "control": sockets["control"]},
        "inputs": [{"node": "market", "socket": sockets["up"]}],
        "params": {"min_spread_bps": 1, "fees_bps": {"venue_a": 5, "venue_b": 5}},
    }}}
    got: list = []

    async def deliver(block) -> None:
        for frame in block.frames():
            got.extend(r for r in P.decode_message(frame).tlvs if isinstance(r, P.ArbitrageSignal))

    async with open_publisher(sockets["up"], source_id=5, on_control=lambda r, sub: requests.append(r)) as market:
        host = NodeHost(plan, "arb")
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            await wait_for(lambda: any(s.connected for s in market.statistics().subscribers))
            down = InputLink(InputSpec(node="arb", socket=sockets["data"]), subscriber_name="down")
            nursery.start_soon(down.run, deliver)
            await wait_for(lambda: host.ctx._publisher.statistics().subscribers)
            up = Upstream(source=5)
            market.publish_nowait(up.block(
                P.mapping_for(A), P.mapping_for(B),
                P.Quote(A.id, 1999 * U, U, 2000 * U, 3 * U, 1),
                P.Quote(B.id, 2004 * U, 2 * U, 2005 * U, U, 2),
            ))
            await wait_for(lambda: got)
            [signal] = got
            # buy A at 2000, sell B at 2004, 5 bps each side: 4 - 1.0 - 1.002 = 1.998 per ETH
            assert (signal.instrument_id, signal.sell_instrument_id) == (A.id, B.id)
            assert signal.max_quantity == 2 * U and signal.net_profit == 3_99600000
            assert host.stats()["counters"]["signals"] == 1
            assert requests == []  # it read the market from its first message: nothing to ask for
            nursery.cancel_scope.cancel()

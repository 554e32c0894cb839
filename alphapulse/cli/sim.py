"""``alphapulse sim``: run the simulated exchange standalone (no topology, no supervisord).

    alphapulse sim --port 8790 --symbols BTC-USD,ETH-USD --rate 2000

Serves the Coinbase Exchange feed format on ws://HOST:PORT; point ``source.coinbase``
(``feed: exchange``, ``endpoint: ws://127.0.0.1:8790``) or any Coinbase client at it.
"""

from __future__ import annotations

import argparse
import logging
import random

import trio

HELP = "run a simulated exchange (Coinbase Exchange feed format) on a local WebSocket port"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8790, help="TCP port (default 8790; 0 picks one)")
    parser.add_argument("--symbols", default="BTC-USD", help="comma-separated BASE-QUOTE products")
    parser.add_argument("--rate", type=float, default=200.0, help="order events per second (default 200)")
    parser.add_argument("--mid", action="append", default=[], metavar="SYMBOL=PRICE",
                        help="start mid of a symbol, e.g. BTC-USD=60000 (repeatable; others 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--volatility-bps", type=float, default=2.0, help="fair-price volatility per second")
    parser.add_argument("--depth", type=int, default=50, help="levels per side")
    parser.add_argument("--tick-size", default="0.01", help="price increment")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until ^C)")


def run(args: argparse.Namespace) -> int:
    from alphapulse.cli import ExitCode
    from alphapulse.cli._serve import serve_in_foreground, stop_after
    from nodes._simulated import SimExchange, serve
    from nodes.simulated import SimulatedParams, clock_ids, make_market

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        start_mid = dict(item.split("=", 1) for item in args.mid)
        symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if not symbols or any(s.count("-") != 1 for s in symbols):
            raise ValueError(f"--symbols must be BASE-QUOTE products, got {args.symbols!r}")
        if args.rate <= 0:
            raise ValueError("--rate must be positive")
        params = SimulatedParams(host=args.host, port=args.port, symbols=symbols, start_mid=start_mid,
                                 message_rate=args.rate, volatility_bps=args.volatility_bps, depth=args.depth,
                                 tick_size=args.tick_size, seed=args.seed if args.seed is not None
                                 else random.randrange(2**32))
        market = make_market(params, first_id=clock_ids())
    except ValueError as exc:
        print(f"alphapulse sim: {exc}")
        return ExitCode.USAGE

    async def main() -> None:
        exchange = SimExchange(market, rate=params.message_rate)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, exchange, params.host, params.port)
            print(f"simulated exchange on ws://{params.host}:{port} ({', '.join(symbols)}, "
                  f"{params.message_rate:g} events/s, seed {params.seed})", flush=True)
            await stop_after(args.duration, nursery)

    return serve_in_foreground(main, "sim")

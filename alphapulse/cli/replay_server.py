"""``alphapulse replay-server``: serve an exchange capture over a local WebSocket.

    alphapulse replay-server ../shared/data/coinbase_advanced/COINBASE.jsonl.zst --port 8791 --wait 5

Every connection gets the capture's received frames (after its first ``--wait`` messages, the
subscribe requests), at recorded speed times ``--speed`` or as fast as possible (``--speed 0``),
from the first frame each time. Point an adapter's ``endpoint`` at it to replay a capture
through the same code path as a live session (this is how raw captures are replayed;
``source.replay`` plays our own recordings).
"""

from __future__ import annotations

import argparse
import functools
import os

import trio

HELP = "serve an exchange capture's frames on a local WebSocket port (replay through the real adapter)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("capture", help="capture file (line format or Coinbase Advanced Trade .jsonl.zst)")
    parser.add_argument("--port", type=int, default=8791, help="TCP port on 127.0.0.1 (default 8791; 0 picks one)")
    parser.add_argument("--speed", type=float, default=1.0, help="recorded speed multiple; 0 = as fast as possible")
    parser.add_argument("--wait", type=int, default=1, metavar="N",
                        help="client messages (subscribes) to wait for before streaming (default 1)")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until ^C)")


def run(args: argparse.Namespace) -> int:
    from alphapulse.cli import ExitCode
    from alphapulse.cli._serve import serve_in_foreground, stop_after
    from alphapulse.testing import serve_capture

    if not os.path.isfile(args.capture) or args.speed < 0:
        print(f"alphapulse replay-server: no capture file {args.capture!r}" if args.speed >= 0
              else "alphapulse replay-server: --speed must be >= 0")
        return ExitCode.USAGE

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                serve_capture, args.capture, wait_for_messages=args.wait, speed=args.speed, port=args.port,
                restart_each_connection=True))
            print(f"replaying {len(server.frames)} frames of {args.capture} on {server.url}", flush=True)
            await stop_after(args.duration, nursery)

    return serve_in_foreground(main, "replay-server")

"""``alphapulse tap TOPOLOGY/NODE``: print what a running node publishes, one JSON line a message.

The question it answers is "what is this node sending right now?" (``vector tap`` asks it of a
Vector component). The tap connects to the node's data socket as one more subscriber, so it
sees exactly what the node's consumers see, through the same filter (``--types``,
``--instruments``) and the same protocol, and prints each message as a JSON line (header fields,
then its records; ``runtime/_tap.py`` and ``protocol/_json.py`` say how values are written).

It never holds the node back: it subscribes with ``drop_oldest`` and a queue of ``--queue``
messages, so a tap piped into a pager loses its own oldest frames, counted by the node for this
subscriber, while the node's consumers go on. It asks for no resends, and for a snapshot only
with ``--snapshot``. When it ends (``--count``, ``--seconds``, Ctrl-C) it says on stderr how many
messages it showed and how many sequence numbers it missed. A node that restarts is followed:
the tap reconnects and counts the producers' new epochs. A ``delivery: peer`` relay carries no
data itself; its tap follows the relay's publishers, each through the relay's filter on it, as
the relay's subscribers do.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time
from typing import Any, TextIO

from alphapulse import protocol
from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_message_filter, add_run_dir, applied_node, message_filter, plural

HELP = "print what a running node publishes, one JSON line per message"
READ_SIZE = 1 << 16
RECONNECT_MAX_SECONDS = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TOPOLOGY/NODE", help="a node of an applied topology (a source, "
                        "transform or relay: what publishes)")
    add_message_filter(parser)
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--queue", type=int, default=4096,
                        help="messages the node may hold for the tap before it drops the oldest (default 4096)")
    parser.add_argument("--snapshot", action="store_true",
                        help="first ask the producers for a snapshot (books, instrument names); every consumer "
                        "of theirs receives it too, as when a node joins mid-stream")
    add_run_dir(parser)


def _targets(args: argparse.Namespace, types: list[int],
             instruments: list[int]) -> list[tuple[str, str, bytes, list[int] | None]] | str:
    """(data socket, name for messages, Subscribe frame, the TLV types to show: None for all) of
    each publisher to follow, or an error message. A node is one. A ``delivery: peer`` relay
    carries no data itself, so its tap follows each of its publishers, as its subscribers do,
    through the relay's filter on that input."""
    found = applied_node(args, args.target, "tap")
    if isinstance(found, str):
        return found
    _, entry = found
    if entry.get("role") == "sink":
        upstream = ", ".join(sorted({link["node"] for link in entry.get("inputs") or ()}))
        return f"{args.target} is a sink: it publishes nothing; tap what it reads: {upstream}"
    name = f"tap-{os.getpid()}"
    if (entry.get("params") or {}).get("delivery") != "peer":
        return [(entry["sockets"]["data"], args.target, _hello(name, types, instruments, args.queue), types or None)]
    from alphapulse.runtime import InputSpec, peer_publishers

    mine = InputSpec(node=name, socket="", types=tuple(types), instruments=tuple(instruments))
    targets = [
        (spec.socket, f"{args.target} (peer delivery from {spec.node})",
         _hello(name, list(spec.types), list(spec.instruments), args.queue), list(spec.types) or None)
        for spec in peer_publishers([InputSpec.from_plan(link) for link in entry.get("inputs") or ()], mine)
    ]
    return targets or f"{args.target}'s filters and --types/--instruments together let nothing through"


def _hello(name: str, types: list[int], instruments: list[int], queue: int) -> bytes:
    """The tap's Subscribe: a filtered tap takes instrument mappings in too (unshown), for the names."""
    from alphapulse.runtime import subscribe_frame

    mapping = int(protocol.TLVType.INSTRUMENT_MAPPING)
    names = [mapping] if types and mapping not in types else []
    return subscribe_frame(name, types=types + names, instruments=instruments, queue=queue)


async def tap(path: str, target: str, hello: bytes, snapshot: bytes | None, view: Any, out: TextIO,
              count: float, err: TextIO, decoders: list[Any], style: str = "json",
              show: list[int] | None = None) -> None:
    """Follow the node's output until ``count`` messages are shown (or the caller's deadline)."""
    import trio

    delay, waiting_said, closed_said = 0.1, False, False
    while True:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if not waiting_said:
                print(f"tap: {target} is not listening (starting, or stopped); waiting for it", file=err)
                waiting_said = True
            await trio.sleep(delay)
            delay = min(RECONNECT_MAX_SECONDS, delay * 2)
            continue
        delay, waiting_said = 0.1, False
        shown = view.shown
        with sock:
            try:
                for frame in (hello, snapshot):
                    if frame is not None:
                        await _send_all(sock, frame)
            except (BrokenPipeError, ConnectionResetError):  # a node on its way down took the connection
                pass
            else:
                if await _follow(sock, view, out, count, decoders, style, show):
                    return
        if view.shown > shown or not closed_said:  # once per outage: a stopping node may accept and close again
            print(f"tap: {target} closed the connection (restarting, or stopped); reconnecting", file=err)
            closed_said = True


async def _follow(sock: Any, view: Any, out: TextIO, count: float, decoders: list[Any], style: str,
                  show: list[int] | None) -> bool:
    """Print what arrives until the connection ends (False) or ``count`` is reached (True)."""
    from alphapulse.runtime import format_message

    decoder = protocol.FrameDecoder()
    decoders.append(decoder)
    while True:
        try:
            data = await sock.recv(READ_SIZE)
        except ConnectionResetError:
            return False
        if not data:
            return False
        decoder.receive_data(data)
        lines = []
        while view.shown < count and (block := decoder.next_block()) is not protocol.NEED_DATA:
            lines.extend(format_message(m, style) for m in view.feed(block, count - view.shown, show))
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()  # a reader (jq, a pipe) sees each read's messages as they come
        if view.shown >= count:
            return True


async def _send_all(sock: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view):]


def _summary(target: str, view: Any, bad_frames: int, seconds: float, queue: int) -> str:
    s = view.summary()
    text = (f"tap {target}: {plural(s.shown, 'message')} shown from {plural(s.sources, 'source')} in "
            f"{seconds:.1f} s; missed {s.missed:,}")
    if s.missed:
        text += (f" (sequence numbers that never reached the tap: its queue of {queue:,} overflowed, counted in "
                 f"the node's drops for subscriber tap-{os.getpid()}, or they were lost upstream of the node)")
    if s.restarts:
        text += f"; {plural(s.restarts, 'producer restart')}"
    if bad_frames + s.malformed:
        text += f"; {plural(bad_frames + s.malformed, 'bad frame')} skipped"
    if s.unnamed:
        text += (f"; {plural(s.unnamed, 'instrument')} shown by id (no InstrumentMapping for them passed; "
                 f"--snapshot asks the producers for them)")
    return text


def run(args: argparse.Namespace) -> int:
    wanted = message_filter(args)
    if isinstance(wanted, str):
        print(wanted, file=sys.stderr)
        return ExitCode.USAGE
    if (args.count is not None and args.count < 1) or (args.seconds is not None and args.seconds <= 0) \
            or args.queue < 1:
        print("error: --count, --seconds and --queue must be positive", file=sys.stderr)
        return ExitCode.USAGE
    types, instruments = wanted
    targets = _targets(args, types, instruments)
    if isinstance(targets, str):
        print(targets, file=sys.stderr)
        return ExitCode.USAGE
    import trio

    from alphapulse.runtime import TapView, control_frame

    snapshot = control_frame(protocol.SnapshotRequest(source=0, instrument_id=0)) if args.snapshot else None
    view = TapView()  # each publisher's types to show go with it (a peer relay's inputs differ)
    decoders: list[Any] = []
    count = math.inf if args.count is None else args.count
    started = time.monotonic()

    async def follow(path: str, name: str, hello: bytes, show: list[int] | None, done: trio.CancelScope) -> None:
        await tap(path, name, hello, snapshot, view, sys.stdout, count, sys.stderr, decoders, args.format, show)
        done.cancel()  # --count reached: the other publishers' taps end too

    async def main() -> None:
        with trio.move_on_after(math.inf if args.seconds is None else args.seconds):
            async with trio.open_nursery() as nursery:
                for path, name, hello, show in targets:
                    nursery.start_soon(follow, path, name, hello, show, nursery.cancel_scope)

    try:
        trio.run(main)
    except* KeyboardInterrupt:  # Ctrl-C ends a tap as --count or --seconds would
        pass
    except* BrokenPipeError:  # `| head`: the reader left; the command's own handling ends it quietly
        raise BrokenPipeError from None
    bad = sum(d.statistics().total_errors for d in decoders)
    print(_summary(args.target, view, bad, time.monotonic() - started, args.queue), file=sys.stderr)
    return ExitCode.OK

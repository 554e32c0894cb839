"""``alphapulse replay FILE [--into TOPOLOGY/NODE]``: check a recording, or play it into a running node.

FILE is a ``sink.recorder`` recording: a directory (its ``rec-*.frames`` files in name order; a
``.frames.open`` file still being written is left out) or one file. The format is raw frames,
headers included, back to back (see ``nodes/recorder.py``).

Without ``--into`` (or with ``--check``) every frame is decoded with its CRC checked and the
recording is summarised: files, frames, time span, sources and their sequence spans, TLV types,
named instruments. Exit 0 when every byte is a valid frame, 1 otherwise.

With ``--into TOPOLOGY/NODE`` the frames go to a running node of an applied topology through
the runtime's own parts: the command binds a temporary publisher socket in the topology's run
directory, asks the node over its control socket to attach it as one more input
(``attach_input``), publishes the frames exactly as recorded (with ``block`` back-pressure, at
``--speed`` times the recorded pace, 0 = as fast as the node takes them), waits until the node
has received them all, and detaches (``detach_input``). The node's own inputs keep flowing; the
recorded headers are kept, so the node tracks the recorded sources' sequences on this input's
own tracker. Replaying a recording of the same sources again is counted as duplicates.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alphapulse import protocol
from alphapulse.cli import ExitCode
from alphapulse.cli._common import add_message_filter, add_run_dir, applied_node, message_filter, plural

HELP = "check a recording, or play it into a running node (--into TOPOLOGY/NODE)"
READ_SIZE = 1 << 20
MAX_SOCKET_PATH = 107
PACE_WINDOW = 0.01
"""With --speed > 0, frames due within this many seconds go out as one block."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="recording directory or file (sink.recorder's format)")
    parser.add_argument("--into", metavar="TOPOLOGY/NODE", help="play into this running node of an applied topology")
    parser.add_argument("--check", action="store_true", help="only verify and summarise (the default without --into)")
    parser.add_argument("--speed", type=float, default=0.0,
                        help="pace relative to the recorded timestamps; 0 (default) = as fast as the node takes them")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for the node to attach, and to receive the last frame")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--messages", action="store_true",
                        help="print every message as a JSON line (as `alphapulse tap` does), the summary on stderr")
    add_message_filter(parser)
    add_run_dir(parser)


# -- reading ---------------------------------------------------------------------------------------
def recording_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("rec-*.frames"))
    return [path]


def read_blocks(files: list[Path], decoder: protocol.FrameDecoder) -> Iterator[protocol.FrameBlock]:
    """Every valid frame of the files, in order, as blocks; bad bytes are counted by the decoder."""
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(READ_SIZE):
                decoder.receive_data(chunk)
                while (block := decoder.next_block()) is not protocol.NEED_DATA:
                    yield block
    decoder.receive_data(b"")
    while (block := decoder.next_block()) is not protocol.NEED_DATA:
        yield block


@dataclasses.dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    frames: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    first_ns: int = 0
    last_ns: int = 0
    types: dict[str, int] = dataclasses.field(default_factory=dict)
    sources: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    """"<source>/<epoch>" -> frames, first and last counter, missing (span - frames; <0: duplicates)"""
    instruments: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, block: protocol.FrameBlock) -> None:
        self.frames += len(block)
        stamps = block.timestamp_ns
        self.first_ns = int(stamps.min()) if not self.first_ns else min(self.first_ns, int(stamps.min()))
        self.last_ns = max(self.last_ns, int(stamps.max()))
        kinds, counts = np.unique(block.tlv_type, return_counts=True)
        for kind, count in zip(kinds.tolist(), counts.tolist(), strict=True):
            name = _type_name(kind)
            self.types[name] = self.types.get(name, 0) + count
        epochs = block.sequence >> np.uint64(40)
        counters = block.sequence & np.uint64((1 << 40) - 1)
        keys = block.source.astype(np.uint64) << np.uint64(24) | epochs
        for key in np.unique(keys).tolist():
            mine = counters[keys == key]
            entry = self.sources.setdefault(f"{key >> 24}/{key & 0xFFFFFF}", {"frames": 0, "first": 0, "last": 0})
            entry["frames"] += len(mine)
            low, high = int(mine.min()), int(mine.max())
            entry["first"] = low if not entry["first"] else min(entry["first"], low)
            entry["last"] = max(entry["last"], high)
            entry["missing"] = entry["last"] - entry["first"] + 1 - entry["frames"]
        for index in np.flatnonzero(block.tlv_type == protocol.TLVType.INSTRUMENT_MAPPING).tolist():
            off, size = int(block.offsets[index]), int(block.sizes[index])
            try:
                for record in protocol.decode_message(memoryview(block.data)[off : off + size]).tlvs:
                    if isinstance(record, protocol.InstrumentMapping):
                        self.instruments[str(record.instrument_id)] = record.canonical
            except protocol.MalformedFrame:
                self.errors["bad_tlv"] = self.errors.get("bad_tlv", 0) + 1


def _type_name(tlv_type: int) -> str:
    if tlv_type == 0:
        return "PLACEHOLDER"  # a frame a filtered link did not carry: header only, keeps sequences whole
    try:
        return protocol.TLVType(tlv_type).name
    except ValueError:
        return f"type_{tlv_type}"


def summarise(files: list[Path]) -> Summary:
    summary = Summary(files=len(files), bytes=sum(p.stat().st_size for p in files))
    decoder = protocol.FrameDecoder()
    for block in read_blocks(files, decoder):
        summary.add(block)
    summary.errors.update({k: v for k, v in decoder.statistics().errors.items() if v})
    return summary


def print_summary(path: Path, summary: Summary, as_json: bool) -> None:
    if as_json:
        print(json.dumps(dataclasses.asdict(summary), indent=2, sort_keys=True))
        return
    span = (summary.last_ns - summary.first_ns) / 1e9 if summary.frames else 0.0
    print(f"recording {path}: {summary.files} files, {summary.bytes} bytes, {summary.frames} frames, {span:.3f} s")
    print("errors: " + (", ".join(f"{k} {v}" for k, v in sorted(summary.errors.items())) or "none"))
    print("types: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.types.items(), key=lambda kv: -kv[1])))
    for key, entry in sorted(summary.sources.items()):
        print(f"source/epoch {key}: {entry['frames']} frames, counters {entry['first']}..{entry['last']}, "
              f"missing {entry['missing']}")
    if summary.instruments:
        print("instruments: " + ", ".join(sorted(summary.instruments.values())))


# -- playing into a node -----------------------------------------------------------------------------
def _target(args: argparse.Namespace) -> tuple[dict[str, Any], str, str] | str:
    """(plan node entry, socket path, input name), or an error message."""
    found = applied_node(args, args.into, "--into")
    if isinstance(found, str):
        return found
    plan, entry = found
    topology, _, node = args.into.partition("/")
    if entry.get("role") == "source" or not entry.get("inputs"):
        return f"node {topology}/{node} has no inputs to play into"
    name = f"replay-{os.getpid()}"
    socket = os.path.join(plan["run_dir"], "s", f"{name}.sock")
    if len(socket.encode()) > MAX_SOCKET_PATH:
        return f"socket path {socket} is longer than {MAX_SOCKET_PATH} bytes"
    return entry, socket, name


async def play(files: list[Path], node: str, control: str, socket: str, name: str, speed: float,
               timeout: float) -> dict:
    """Publish the recording to ``node`` through a temporary attached input; returns what happened."""
    import trio

    from alphapulse.runtime import ControlError, open_publisher, request_async

    decoder = protocol.FrameDecoder()
    sent = 0
    os.makedirs(os.path.dirname(socket), mode=0o700, exist_ok=True)
    async with open_publisher(socket, source_id=0, retransmit_capacity=1 << 16) as publisher:
        await request_async(control, "attach_input", name=name, socket=socket, overflow="block", queue=1 << 16)
        try:
            with trio.fail_after(timeout):
                while not any(s.connected and s.name == node for s in publisher.statistics().subscribers):
                    await trio.sleep(0.01)  # attached, connected and subscribed
            start = trio.current_time()
            first_ns = None
            for block in read_blocks(files, decoder):
                if speed > 0:
                    first_ns = int(block.timestamp_ns[0]) if first_ns is None else first_ns
                    for part in _paced(block, start, first_ns, speed):
                        await trio.sleep_until(part[0])
                        await publisher.publish(part[1])
                else:
                    await publisher.publish(block)
                sent += len(block)
            link = await _wait_received(control, name, sent, timeout)
        finally:
            # if the node went away, nothing is attached any more
            with trio.CancelScope(shield=True), trio.move_on_after(5), contextlib.suppress(ControlError, OSError):
                await request_async(control, "detach_input", name=name)
    errors = {k: v for k, v in decoder.statistics().errors.items() if v}
    sequence = link["sequence"]
    return {"sent": sent, "delivered": sequence["delivered"], "duplicates": sequence["duplicates"],
            "messages_lost": sequence["messages_lost"], "decode_errors": errors}


def _paced(block: protocol.FrameBlock, start: float, first_ns: int, speed: float) -> Iterator[tuple[float, Any]]:
    """(when, part of the block) so frames go out at ``speed`` times their recorded pace."""
    due = start + np.maximum.accumulate((block.timestamp_ns.astype(np.int64) - first_ns) / 1e9 / speed)
    i, n = 0, len(block)
    while i < n:
        j = int(np.searchsorted(due, due[i] + PACE_WINDOW, side="right"))
        if i == 0 and j == n:
            yield float(due[0]), block
            return
        mask = np.zeros(n, np.bool_)
        mask[i:j] = True
        yield float(due[i]), block.select(mask)
        i = j


async def _wait_received(control: str, name: str, sent: int, timeout: float) -> dict:
    """Poll the node's stats until the temporary input has received and released every frame."""
    import trio

    from alphapulse.runtime import request_async

    with trio.fail_after(timeout):
        while True:
            stats = await request_async(control, "stats")
            link = next((i for i in stats["inputs"] if i["upstream"] == name), None)
            if link is not None and link["received_messages"] >= sent and not link["sequence"]["held_frames"]:
                return link
            await trio.sleep(0.05)


# -- printing the messages --------------------------------------------------------------------------
def print_messages(files: list[Path], types: list[int], instruments: list[int], out: Any,
                   style: str = "json") -> tuple[Any, dict]:
    """Every message of the recording (those ``types`` and ``instruments`` select) as a JSON line
    on ``out``; returns the view's summary and the decoder's errors. Frames the instrument filter
    leaves out become placeholders, so the sequence accounting still sees them (a gap it reports
    is one in the recording)."""
    from alphapulse.runtime import TapView, format_message

    view = TapView(show=types or None)
    wanted = np.array(instruments, np.uint64)
    decoder = protocol.FrameDecoder()
    for block in read_blocks(files, decoder):
        if len(wanted):
            block = block.with_placeholders(np.isin(block.instrument_id, wanted))
        lines = [format_message(m, style) for m in view.feed(block)]
        if lines:
            out.write("\n".join(lines) + "\n")
    return view.summary(), {k: v for k, v in decoder.statistics().errors.items() if v}


def run(args: argparse.Namespace) -> int:
    files = recording_files(args.file)
    if not args.file.exists() or not files:
        print(f"no recording at {args.file}", file=sys.stderr)
        return ExitCode.USAGE
    if args.messages:
        wanted = message_filter(args)
        if isinstance(wanted, str):
            print(wanted, file=sys.stderr)
            return ExitCode.USAGE
        summary, errors = print_messages(files, *wanted, sys.stdout, args.format)
        print(f"recording {args.file}: {plural(summary.shown, 'message')} shown from "
              f"{plural(summary.sources, 'source')}; {summary.missed:,} missing in their sequences, "
              f"{plural(summary.restarts, 'producer restart')}; "
              f"errors: {', '.join(f'{k} {v}' for k, v in sorted(errors.items())) or 'none'}", file=sys.stderr)
        return ExitCode.INVALID if errors or summary.malformed else ExitCode.OK
    if not args.into or args.check:
        summary = summarise(files)
        print_summary(args.file, summary, args.json)
        return ExitCode.INVALID if summary.errors else ExitCode.OK
    target = _target(args)
    if isinstance(target, str):
        print(target, file=sys.stderr)
        return ExitCode.USAGE
    entry, socket, name = target
    import trio

    from alphapulse.runtime import ControlError

    node = args.into.partition("/")[2]
    failure: BaseException | None = None
    try:
        result = trio.run(play, files, node, entry["sockets"]["control"], socket, name, args.speed, args.timeout)
    except* (ControlError, OSError, trio.TooSlowError) as group:  # nurseries wrap what they raise
        failure = group
        while isinstance(failure, BaseExceptionGroup):
            failure = failure.exceptions[0]
    if failure is not None:
        print(f"cannot play into {args.into}: {type(failure).__name__}: {failure}", file=sys.stderr)
        return ExitCode.RUNTIME
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"played {result['sent']} frames into {args.into}: delivered {result['delivered']}, "
              f"duplicates {result['duplicates']}, lost {result['messages_lost']}")
    return ExitCode.INVALID if result["decode_errors"] else ExitCode.OK

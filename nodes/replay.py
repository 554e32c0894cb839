"""``source.replay``: play our recorder's files back into a topology, bit-for-bit.

Decision: this kind plays what ``sink.recorder`` writes — the framed TLV stream, whole messages
with their original headers, in one file or a directory of rotated files (played in name
order). The frames are republished unchanged (source ids, sequences, timestamps, checksums), so
an incident reproduces exactly and consumers track the original producers, as through a relay.

Raw exchange captures (the ``../shared/data`` formats) are not normalised here: that would need
the venue parsers, which belong to the adapters. They are replayed through the adapter itself,
pointed at ``alphapulse replay-server CAPTURE`` (a local WebSocket server playing the capture's
frames), so a capture goes through exactly the code path a live session does.

Pacing: ``speed`` 1 keeps the recorded gaps between header timestamps, N plays N times faster,
0 as fast as the subscribers take it. With ``loop``, passes after the first are re-stamped with
this node's own source id and sequence (a second pass under the original sequences would be
dropped as duplicates by every consumer).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import trio

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import HEADER_SIZE, NEED_DATA, FrameBlock, FrameDecoder, TLVType

READ_SIZE = 1 << 20
MAX_BLOCK = 4096
"""Frames per published block when playing as fast as possible."""


@dataclasses.dataclass(frozen=True)
class ReplayParams:
    path: str = param(
        doc="A recording file, or a directory of rotated recordings (played in name order); "
        "relative paths are relative to the topology file.", minLength=1,
    )
    speed: float = param(
        1.0, doc="Playback speed relative to the recorded timestamps; 0 plays as fast as possible.",
        live=True, minimum=0,
    )
    wait_for_subscribers: int = param(
        1, doc="Subscribers to wait for before playing, so the start of the recording reaches someone; "
        "0 plays at once.", minimum=0,
    )
    loop: bool = param(False, doc="Start over at the end instead of stopping (later passes are "
                       "re-stamped with this node's source id and sequence).", live=True)


def recording_files(path: str) -> list[str]:
    """The files of a recording: the file itself, or a directory's regular files in name order."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    return [path]


def read_blocks(files: list[str], decoder: FrameDecoder) -> Iterator[FrameBlock]:
    """Blocks of whole valid frames from the files, as one stream (a frame may span two files)."""
    for name in files:
        with open(name, "rb") as f:
            while chunk := f.read(READ_SIZE):
                decoder.receive_data(chunk)
                while (block := decoder.next_block()) is not NEED_DATA:
                    yield block
    decoder.receive_data(b"")
    while (block := decoder.next_block()) is not NEED_DATA:
        yield block


def due_offsets(timestamps_ns: list[int], first_ns: int, speed: float) -> list[float]:
    """Seconds after the start of the pass at which each frame is due (recorded gaps / speed)."""
    return [max(0, ts - first_ns) / 1e9 / speed for ts in timestamps_ns]


@node_kind(
    "source.replay",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
           TLVType.BAR, TLVType.POOL_SWAP, TLVType.POOL_MINT, TLVType.POOL_BURN,
           TLVType.POOL_SYNC, TLVType.EVM_LOG, TLVType.POOL_EVENT_RETRACTION,
           TLVType.ARBITRAGE_SIGNAL, TLVType.INSTRUMENT_MAPPING],
    example={"path": "recordings/demo", "speed": 10, "loop": True},
)
class Replay(Node):
    """Replay source: plays recorder files bit-for-bit, at recorded speed, N times faster, or flat out.

    Recorder files keep their original headers, so an incident reproduces exactly.
    """

    Params = ReplayParams

    def __init__(self, params: ReplayParams) -> None:
        super().__init__(params)
        self.passes = 0
        self.frames = 0

    async def run(self, ctx):
        files = recording_files(self.params.path)
        missing = [f for f in files if not os.path.isfile(f)]
        if missing or not files:
            ctx.counters["errors.no_recording"] += 1
            ctx.log.error("replay: no recording at %s", self.params.path)
            await trio.sleep_forever()
        await ctx.wait_for_subscribers(self.params.wait_for_subscribers)
        while True:
            decoder = FrameDecoder()
            await self._pass(ctx, files, decoder, restamp=self.passes > 0)
            for kind, n in decoder.statistics().errors.items():
                if n:
                    ctx.counters[f"errors.recording_{kind}"] += n
            self.passes += 1
            ctx.log.info("replay: pass %d done, %d frames", self.passes, self.frames)
            if not self.params.loop:
                break
        await trio.sleep_forever()

    async def _pass(self, ctx, files: list[str], decoder: FrameDecoder, restamp: bool) -> None:
        start = trio.current_time()
        first_ns: int | None = None
        for block in read_blocks(files, decoder):
            timestamps = block.timestamp_ns.tolist()
            if first_ns is None:
                first_ns = timestamps[0]
            speed = self.params.speed
            if speed <= 0:
                for lo in range(0, len(block), MAX_BLOCK):
                    await self._publish(ctx, block, lo, min(len(block), lo + MAX_BLOCK), restamp)
                continue
            due = due_offsets(timestamps, first_ns, speed)
            lo = 0
            while lo < len(block):
                await trio.sleep_until(start + due[lo])
                now = trio.current_time() - start
                hi = lo + 1
                while hi < len(block) and due[hi] <= now and hi - lo < MAX_BLOCK:
                    hi += 1
                await self._publish(ctx, block, lo, hi, restamp)
                lo = hi

    async def _publish(self, ctx, block: FrameBlock, lo: int, hi: int, restamp: bool) -> None:
        part = block.slice(lo, hi)  # its own frames only: a block's data is exactly its frames
        self.frames += hi - lo
        if not restamp:
            await ctx.publish_block(part)  # bit-for-bit: original headers
            return
        domains = part.relay_domain.tolist()
        for i, frame in enumerate(part.frames()):
            ctx.message(bytes(frame[HEADER_SIZE:]), relay_domain=domains[i])
        await ctx.flush()

    def statistics(self) -> dict:
        return {"passes": self.passes, "frames": self.frames, "path": self.params.path}

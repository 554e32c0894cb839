"""``sink.counter``: independent per-source accounting of what arrived, for runtime tests."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import trio

from alphapulse.kinds import Node, node_kind, param


@dataclasses.dataclass(frozen=True)
class CounterSinkParams:
    report_interval: float = param(
        1.0, doc="Seconds between counter reports in the log.", live=True, exclusiveMinimum=0,
    )
    delay_ms: float = param(
        0.0, doc="Artificial delay per received block, to make a deliberately slow consumer.",
        live=True, minimum=0,
    )
    stall_file: str = param(
        "", doc="Test hook for the watchdog: when this file exists the sink deletes it and then blocks "
        "its event loop for stall_seconds (a hung node). Empty: never.", live=True,
    )
    stall_seconds: float = param(30.0, doc="How long a stall (stall_file) blocks.", live=True, minimum=0)


class _EpochTally:
    """Which counters of one (source, epoch) arrived: a bitmap, so loss and duplicates are exact."""

    def __init__(self) -> None:
        self.seen = np.zeros(1024, np.bool_)
        self.first = 0
        self.last = 0
        self.received = 0
        self.duplicates = 0

    def add(self, counters: np.ndarray) -> None:
        top = int(counters.max())
        if top >= self.seen.shape[0]:
            grown = np.zeros(max(top + 1, 2 * self.seen.shape[0]), np.bool_)
            grown[: self.seen.shape[0]] = self.seen
            self.seen = grown
        unique, counts = np.unique(counters, return_counts=True)
        self.duplicates += int(counts.sum() - unique.size) + int(self.seen[unique].sum())
        self.seen[unique] = True
        self.received += int(counters.size)
        low = int(unique[0])
        self.first = low if not self.first else min(self.first, low)
        self.last = max(self.last, int(unique[-1]))

    def report(self) -> dict:
        unique = int(self.seen.sum())
        return {
            "first": self.first,
            "last": self.last,
            "received": self.received,
            "unique": unique,
            "duplicates": self.duplicates,
            "missing": self.last - self.first + 1 - unique,
        }


@node_kind("sink.counter", emits=(), accepts=None, example={"report_interval": 5})
class CounterSink(Node):
    """Test sink: per-source received, gap, recovered and duplicate counts on its control socket.

    It keeps its own exact record of which sequence numbers arrived, independent of the runtime's
    gap tracking, so a test can check that every missing message was counted as lost.
    """

    Params = CounterSinkParams

    def __init__(self, params: CounterSinkParams) -> None:
        super().__init__(params)
        self.tallies: dict[tuple[int, int], _EpochTally] = {}
        self.blocks = 0

    def _account(self, block) -> None:
        self.blocks += 1
        sources = block.source
        sequences = block.sequence
        for source in np.unique(sources).tolist():
            of_source = sequences[sources == source]
            epochs = of_source >> np.uint64(40)
            for epoch in np.unique(epochs).tolist():
                counters = (of_source[epochs == epoch] & np.uint64((1 << 40) - 1)).astype(np.int64)
                self.tallies.setdefault((source, epoch), _EpochTally()).add(counters)

    async def run(self, ctx):
        next_report = trio.current_time() + self.params.report_interval
        async for block in ctx.blocks():
            self._account(block)
            if self.params.delay_ms:
                await trio.sleep(self.params.delay_ms / 1000)
            if self.params.stall_file and os.path.exists(self.params.stall_file):
                os.remove(self.params.stall_file)  # once: the process the watchdog restarts runs on
                ctx.log.warning("stalling the event loop for %.1f s (%s)", self.params.stall_seconds,
                                self.params.stall_file)
                time.sleep(self.params.stall_seconds)  # blocking on purpose: a hung node
            if trio.current_time() >= next_report:
                next_report = trio.current_time() + self.params.report_interval
                ctx.log.info("received %d messages from %d source epochs",
                             sum(t.received for t in self.tallies.values()), len(self.tallies))

    def statistics(self) -> dict:
        return {
            "blocks": self.blocks,
            "epochs": [
                {"source": source, "epoch": epoch, **tally.report()}
                for (source, epoch), tally in sorted(self.tallies.items())
            ],
        }


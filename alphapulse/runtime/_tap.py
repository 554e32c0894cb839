"""What ``alphapulse tap`` shows of a node's output, without sockets (the command does the I/O).

A tap is one more subscriber of a node's publisher, and a polite one: it subscribes with
``drop_oldest``, so a tap that cannot keep up (a slow terminal, a pager) loses frames of its
own queue and never holds the node back, and it asks for no resends and no snapshots unless
told to. It still sees every sequence number (a filtered subscriber gets a placeholder for each
frame it did not ask for), so it knows exactly what it missed and says so.

:class:`TapView` turns frame blocks into one JSON-ready dict per message and keeps that count:
per source, the epoch and the next counter expected. A counter past the expected one is frames
missed; a new epoch is a producer restart (its counters start again), not a gap.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterable
from typing import Any

from alphapulse import protocol
from alphapulse.runtime._epoch import split_sequence
from alphapulse.runtime._input import InputSpec, control_frame, subscribe_record


def subscribe_frame(name: str, *, types: Iterable[int] = (), instruments: Iterable[int] = (), queue: int) -> bytes:
    """The ``Subscribe`` a tap sends first, as a link's: its name, filter, ``drop_oldest`` and queue."""
    spec = InputSpec(node="", socket="", types=tuple(types), instruments=tuple(instruments), overflow="drop_oldest",
                     queue=queue)
    return control_frame(subscribe_record(spec, name))


@dataclasses.dataclass
class _Source:
    epoch: int
    next_counter: int


@dataclasses.dataclass(frozen=True)
class TapSummary:
    shown: int
    sources: int
    missed: int
    """frames whose sequence numbers never reached the tap (its own queue dropped them, or the
    node never had them: a gap upstream of it that its consumers recover or count)"""
    restarts: int
    """sources that began a new epoch (their producer restarted) while the tap watched"""
    malformed: int
    unnamed: int
    """instruments shown by id: no ``InstrumentMapping`` for them had passed the tap"""


class _Names(dict):
    """Instrument id -> short name, remembering the ids asked for that had none."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: set[int] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        if found is None:
            self.missing.add(key)
        return found

    def learn(self, instrument_id: int, name: str) -> None:
        self[instrument_id] = name
        self.missing.discard(instrument_id)


class TapView:
    """Frames in, JSON-ready dicts out (one per message, placeholders and control frames left
    out), with what the stream's sequence numbers say the tap missed.

    ``show``: the first-TLV types to show (None: all). A tap filtered by type subscribes to
    ``InstrumentMapping`` too, so that instruments still show by name, and the publisher lets
    system messages through every filter (``SnapshotComplete``); they are taken in, not shown."""

    def __init__(self, *, show: Iterable[int] | None = None) -> None:
        self.show = None if show is None else frozenset(int(t) for t in show)
        self.names = _Names()
        self._sources: dict[int, _Source] = {}
        self.shown = self.missed = self.restarts = self.malformed = 0

    def feed(self, block: Any, limit: float = math.inf, show: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """The messages of ``block`` worth showing, oldest first; at most ``limit`` of them (the
        frames after the last one shown are left untracked: the caller stops there). ``show``
        overrides the view's own for this block (one publisher of several, filtered its own way)."""
        shows = self.show if show is None else frozenset(show)
        shown: list[dict[str, Any]] = []
        placeholder = block.is_placeholder.tolist()
        sources, sequences = block.source.tolist(), block.sequence.tolist()
        for i, frame in enumerate(block.frames()):
            if len(shown) >= limit:
                break
            if sequences[i] == 0:  # control from the publisher to this subscriber (SequenceHead, ...)
                continue
            epoch, counter = split_sequence(sequences[i])
            self._track(sources[i], epoch, counter)
            if placeholder[i]:  # a frame the tap's filter left out: counted, not shown
                continue
            try:
                message = protocol.decode_message(frame)
            except protocol.MalformedFrame:  # a sound frame whose TLVs do not decode
                self.malformed += 1
                continue
            self._learn(message.tlvs)
            if shows is not None and (not message.tlvs or _tlv_type(message.tlvs[0]) not in shows):
                continue
            shown.append(self._render(message.header, epoch, counter, message.tlvs))
        self.shown += len(shown)
        return shown

    def _track(self, source: int, epoch: int, counter: int) -> None:
        known = self._sources.get(source)
        if known is None:
            self._sources[source] = _Source(epoch, counter + 1)
            return
        if epoch != known.epoch:
            self.restarts += 1
            known.epoch, known.next_counter = epoch, counter + 1
            return
        if counter > known.next_counter:
            self.missed += counter - known.next_counter
        known.next_counter = max(known.next_counter, counter + 1)

    def _learn(self, records: list[Any]) -> None:
        for record in records:
            if isinstance(record, protocol.InstrumentMapping):
                try:
                    name = protocol.parse_instrument(record.canonical).short
                except protocol.InstrumentError:
                    name = record.canonical
                self.names.learn(record.instrument_id, name)

    def _render(self, header: Any, epoch: int, counter: int, records: list[Any]) -> dict[str, Any]:
        return {
            "time": _iso(header.timestamp_ns),
            "timestamp_ns": header.timestamp_ns,
            "domain": _domain(header.relay_domain),
            "source": header.source,
            "epoch": epoch,
            "seq": counter,
            "records": [protocol.record_to_json(r, self.names) for r in records],
        }

    def summary(self) -> TapSummary:
        return TapSummary(self.shown, len(self._sources), self.missed, self.restarts, self.malformed,
                          len(self.names.missing))


def format_message(message: dict[str, Any], style: str) -> str:
    """One line of a rendered message: ``json`` (compact), or ``logfmt``
    (``time=... source=34005 seq=261119 | type=Trade instrument=sim_a:BTC-USD price=59897.83 ...``:
    the header's key fields, then each record's fields; an array's elements joined by ``,``, an
    element's fields by ``/`` in the layout's order: ``bids=60000/1.5,59999.5/2``)."""
    if style == "json":
        return json.dumps(message, separators=(",", ":"))
    head = f"time={message['time']} source={message['source']} seq={message['seq']}"
    records = (" ".join(f"{key}={_logfmt_value(value)}" for key, value in record.items())
               for record in message["records"])
    return " | ".join((head, *records))


def _logfmt_value(value: Any) -> str:
    if isinstance(value, list):
        text = ",".join("/".join(map(str, v.values())) if isinstance(v, dict) else str(v) for v in value)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
    if text and not any(c in text for c in ' "=|\\') and text.isprintable():
        return text
    return json.dumps(text)  # quoted, escaped


def _tlv_type(record: Any) -> int:
    return int(record.tlv_type) if isinstance(record, protocol.UnknownTLV) else int(type(record).TLV_TYPE)


def _iso(unix_ns: int) -> str:
    """``2026-11-23T05:15:01.123456789Z``: nanoseconds kept, as the header has them."""
    seconds, nanos = divmod(unix_ns, 10**9)
    return f"{dt.datetime.fromtimestamp(seconds, dt.UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def _domain(value: int) -> str | int:
    try:
        return protocol.RelayDomain(value).name.lower()
    except ValueError:
        return value

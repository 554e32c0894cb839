"""Blocks in, rows out: frames to per-table numpy rows, and InstrumentMappings to names. Sans-IO.

The block path: a message that is exactly one standard TLV of a fixed-size type (the shape
adapters emit) is gathered for the whole block with one numpy fancy-index, no Python per
message. Everything else that carries a TLV we store (several TLVs in one message, extended
headers, the variable-size book TLVs, signals behind a SignalIdentity) is walked per message
with ``protocol.iter_tlvs``; a message with a malformed TLV contributes nothing and is counted.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from alphapulse import protocol
from alphapulse.protocol import HEADER_SIZE, TLVType
from nodes._parquet._tables import BY_TYPE, TABLE_NAMES, TABLES

HEADER_DTYPE = np.dtype([("ts", "<u8"), ("source", "<u2"), ("sequence", "<u8")])
_BLOCK_PATH = tuple(t for t in TABLES if t.fixed_size is not None and t.fixed_size <= protocol.MAX_STANDARD_VALUE)
_VALUES_PATH = tuple(t for t in TABLES if t.rows_from_values is not None)
WANTED_FIRST = np.zeros(256, np.bool_)
"""First TLV types of the messages this sink keeps (and logs to its WAL)."""
for _type in (*BY_TYPE, TLVType.INSTRUMENT_MAPPING, TLVType.SIGNAL_IDENTITY):
    WANTED_FIRST[int(_type)] = True


class RowBatch:
    """Rows waiting for the next flush: per table, a list of (rows, header) numpy chunks."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in TABLE_NAMES}
        self.rows = 0

    def add(self, table: str, rows: np.ndarray, header: np.ndarray) -> None:
        if len(rows):
            self.chunks[table].append((rows, header))
            self.rows += len(rows)

    def tables(self) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        """(spec, rows, header) per non-empty table, each concatenated once."""
        out = []
        for spec in TABLES:
            chunks = self.chunks[spec.name]
            if chunks:
                out.append((spec, np.concatenate([r for r, _ in chunks]), np.concatenate([h for _, h in chunks])))
        return out


@dataclasses.dataclass
class IngestReport:
    """What one block contributed; the node turns it into counters."""

    keep: np.ndarray
    """frames worth logging to the WAL (they carry rows or names)"""
    rows: Counter[str] = dataclasses.field(default_factory=Counter)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    malformed: int = 0
    bad_instruments: int = 0
    mismatched_ids: int = 0


class Ingestor:
    """Turns blocks into rows of a :class:`RowBatch` and keeps the instrument name table."""

    def __init__(self) -> None:
        self.names: dict[int, tuple[str | None, str | None]] = {}
        """instrument id -> (venue, display symbol)"""
        self.mapping_frames: dict[int, bytes] = {}
        """instrument id -> the frame that named it, re-logged at the head of every new WAL file"""

    def mapping_preamble(self) -> tuple[bytes, int]:
        frames = list(dict.fromkeys(self.mapping_frames.values()))
        return b"".join(frames), len(frames)

    def ingest(self, block: Any, batch: RowBatch) -> IngestReport:
        first = block.tlv_type
        wanted = WANTED_FIRST[first]
        report = IngestReport(keep=wanted)
        if not wanted.all():
            types, counts = np.unique(first[~wanted], return_counts=True)
            for tlv_type, count in zip(types.tolist(), counts.tolist(), strict=True):
                report.skipped[_type_name(tlv_type)] += count
        if not wanted.any():
            return report
        header = np.empty(len(block), HEADER_DTYPE)
        header["ts"], header["source"], header["sequence"] = block.timestamp_ns, block.source, block.sequence
        data = np.frombuffer(block.data, np.uint8)
        offsets = block.offsets.astype(np.int64)
        length_byte = data[np.minimum(offsets + HEADER_SIZE + 1, len(data) - 1)]
        handled = np.zeros(len(block), np.bool_)
        for spec in _BLOCK_PATH:
            mask = (first == spec.tlv_type) & (block.sizes == HEADER_SIZE + 2 + spec.fixed_size)
            mask &= length_byte == spec.fixed_size
            if mask.any():
                index = offsets[mask][:, None] + (HEADER_SIZE + 2 + np.arange(spec.fixed_size))
                batch.add(spec.name, data[index].view(spec.dtype).reshape(-1), header[mask])
                report.rows[spec.name] += int(mask.sum())
                handled |= mask
        for spec in _VALUES_PATH:
            handled |= self._ingest_values(spec, data, offsets, block.sizes, first, header, batch, report)
        slow = np.flatnonzero(wanted & ~handled)
        if len(slow):
            view = memoryview(block.data)
            for i, off, size in zip(slow.tolist(), offsets[slow].tolist(), block.sizes[slow].tolist(), strict=True):
                self._ingest_message(view[off : off + size], header[i : i + 1], batch, report)
        return report

    @staticmethod
    def _ingest_values(spec, data, offsets, sizes, first, header, batch: RowBatch, report: IngestReport) -> np.ndarray:
        """Messages that are one TLV of a variable-size type, standard or extended header, at once."""
        candidates = np.flatnonzero(first == spec.tlv_type)
        handled = np.zeros(len(first), np.bool_)
        if not len(candidates):
            return handled
        at = offsets[candidates] + HEADER_SIZE
        standard = data[at] != protocol.EXTENDED_TLV_MARKER
        lengths = np.where(standard, data[at + 1], data[np.minimum(at + 3, len(data) - 1)]
                           | (data[np.minimum(at + 4, len(data) - 1)].astype(np.int64) << 8)).astype(np.int64)
        values = at + np.where(standard, 2, 5)
        whole = sizes[candidates] == values - offsets[candidates] + lengths  # the TLV is the whole payload
        whole &= lengths >= protocol.LAYOUTS[spec.tlv_type].head_size
        candidates, values, lengths = candidates[whole], values[whole], lengths[whole]
        if not len(candidates):
            return handled
        rows, message, ok = spec.rows_from_values(data, values, lengths)
        batch.add(spec.name, rows, header[candidates][message])
        report.rows[spec.name] += len(rows)
        handled[candidates[ok]] = True  # the others go the per-message way, which counts them malformed
        return handled

    def _ingest_message(self, frame: memoryview, header: np.ndarray, batch: RowBatch, report: IngestReport) -> None:
        found = []
        try:
            for tlv_type, value in protocol.iter_tlvs(frame[HEADER_SIZE:]):
                if tlv_type == TLVType.INSTRUMENT_MAPPING:
                    self._learn(protocol.decode(tlv_type, value), frame, report)
                spec = BY_TYPE.get(tlv_type)
                if spec is not None:
                    found.append((spec.name, spec.rows_from_value(value)))
        except protocol.MalformedFrame:
            report.malformed += 1
            return
        for table, rows in found:
            batch.add(table, rows, np.repeat(header, len(rows)))
            report.rows[table] += len(rows)

    def _learn(self, record: Any, frame: memoryview, report: IngestReport) -> None:
        try:
            instrument = protocol.parse_instrument(record.canonical)
        except protocol.InstrumentError:
            report.bad_instruments += 1
            return
        if instrument.id != record.instrument_id:
            report.mismatched_ids += 1
        self.names[record.instrument_id] = (instrument.venue, instrument.name)
        self.mapping_frames[record.instrument_id] = bytes(frame)


def _type_name(tlv_type: int) -> str:
    try:
        return TLVType(tlv_type).name
    except ValueError:
        return f"type_{tlv_type}"

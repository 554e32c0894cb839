"""Which TLVs become which Parquet table, and how a TLV value becomes rows and then columns.

``TABLES`` is the one table to read (h11 style): one row per output table — its name (the
directory and file prefix), the TLV type it takes, the numpy dtype of one row, and how each row
field becomes Parquet columns. Adding a table for another fixed-size TLV is one
``_fixed_table(...)`` line.

Column rules, by the wire kind of the field (the protocol's layout table says which):

* ``fixed`` (i64 at 1e8): ``<name>`` as an exact ``decimal128(19, 8)`` (every i64 fits) and
  ``<name>_float`` as float64;
* ``u64`` fields named ``*_ns`` (venue times): ``<name without _ns>`` as ``timestamp[ns, UTC]``,
  null when 0 (unknown); ``duration_ns`` stays an integer;
* ``u128``/``u160``/``u256``: the exact integer as decimal text (DEX amounts exceed every Parquet
  integer type); amounts with a decimals field also get ``<name>_float`` (raw / 10**decimals);
* ``address``/``bytes32``: ``0x`` hex text; other integers as themselves.

Every table starts with ``ts`` (the message header time, which also picks the partition), then
``venue``, ``symbol`` (resolved from InstrumentMapping TLVs; null while unknown) and
``instrument_id``, and ends with the header's ``source`` and ``sequence``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from alphapulse import protocol
from alphapulse.protocol import TLVType

DECIMAL = pa.decimal128(19, 8)
TIMESTAMP = pa.timestamp("ns", tz="UTC")


ValuesReader = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TableSpec:
    name: str
    tlv_type: TLVType
    dtype: np.dtype
    columns: tuple[tuple[str, str], ...]
    """(row field, wire kind) in column order; instrument_id excluded (it always leads)."""
    rows_from_value: Callable[[Any], np.ndarray]
    """Rows of one TLV value (the per-message path); raises MalformedFrame."""
    fixed_size: int | None = None
    """Value size when one TLV is one row of exactly ``dtype``: such messages take the block path."""
    scaled: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """raw integer field -> its decimals field, for the ``_float`` twin."""
    rows_from_values: ValuesReader | None = None
    """Block path of a variable-size TLV: (buffer, value offsets, value lengths) of many messages ->
    (rows, index of each row's message, which messages were well formed)."""


def _head_columns(layout: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for item in layout.head:
        kind = getattr(item, "kind", None)
        if kind is not None and item.name != "instrument_id":
            out.append((item.name, kind.name))
    return tuple(out)


def _fixed_rows(dtype: np.dtype, size: int) -> Callable[[Any], np.ndarray]:
    def rows(value: Any) -> np.ndarray:
        if len(value) != size:
            raise protocol.MalformedFrame(f"value of {len(value)} bytes, expected {size}")
        return np.frombuffer(value, dtype, 1).copy()

    return rows


def _fixed_table(name: str, tlv_type: TLVType, scaled: Mapping[str, str] | None = None) -> TableSpec:
    layout = protocol.LAYOUTS[tlv_type]
    dtype = np.dtype(layout.numpy_fields())
    assert dtype.itemsize == layout.fixed_size
    return TableSpec(name, tlv_type, dtype, _head_columns(layout), _fixed_rows(dtype, layout.fixed_size),
                     layout.fixed_size, dict(scaled or {}))


# -- the variable-size TLVs: one row per book level, per book change, per signal -----------------
_DELTA_HEAD = struct.Struct("<QQQQHB")
DELTA_DTYPE = np.dtype([
    ("instrument_id", "<u8"), ("exchange_ts_ns", "<u8"), ("exchange_sequence", "<u8"),
    ("prev_sequence", "<u8"), ("flags", "u1"), ("side", "u1"), ("price", "<i8"), ("qty", "<i8"),
])


def _delta_rows(value: Any) -> np.ndarray:
    changes = protocol.order_book_changes(value)  # checks the count against the size
    iid, ts, seq, prev, _, flags = _DELTA_HEAD.unpack_from(value)
    rows = np.empty(len(changes), DELTA_DTYPE)
    rows["instrument_id"], rows["exchange_ts_ns"], rows["exchange_sequence"] = iid, ts, seq
    rows["prev_sequence"], rows["flags"] = prev, flags
    rows["side"], rows["price"], rows["qty"] = changes["side"], changes["price"], changes["qty"]
    return rows


def _heads_and_elements(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, head: np.dtype,
                        element: np.dtype, counts_of: Callable[[np.ndarray], np.ndarray]):
    """Vectorised read of many ``head + count x element`` values: (heads, counts, ok, message index
    of each element, element index within its message, elements). Values whose count disagrees with
    their length are not ok and contribute no elements."""
    size = head.itemsize
    heads = data[offsets[:, None] + np.arange(size)].view(head).reshape(-1)
    counts = counts_of(heads).astype(np.int64)
    ok = size + counts * element.itemsize == lengths
    counts = np.where(ok, counts, 0)
    message = np.repeat(np.arange(len(heads)), counts)
    within = np.arange(len(message)) - np.repeat(np.cumsum(counts) - counts, counts)
    starts = offsets[message] + size + within * element.itemsize
    elements = data[starts[:, None] + np.arange(element.itemsize)].view(element).reshape(-1)
    return heads, counts, ok, message, within, elements


_DELTA_HEAD_DTYPE = np.dtype([("instrument_id", "<u8"), ("exchange_ts_ns", "<u8"), ("exchange_sequence", "<u8"),
                              ("prev_sequence", "<u8"), ("n_changes", "<u2"), ("flags", "u1")])
_CHANGE_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8"), ("side", "u1")])


def _delta_block(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
    heads, _, ok, message, _, changes = _heads_and_elements(
        data, offsets, lengths, _DELTA_HEAD_DTYPE, _CHANGE_DTYPE, lambda h: h["n_changes"])
    rows = np.empty(len(message), DELTA_DTYPE)
    for name in ("instrument_id", "exchange_ts_ns", "exchange_sequence", "prev_sequence", "flags"):
        rows[name] = heads[name][message]
    rows["side"], rows["price"], rows["qty"] = changes["side"], changes["price"], changes["qty"]
    return rows, message, ok


_BOOK_HEAD = struct.Struct("<QQQ")
_BOOK_HEAD_DTYPE = np.dtype([("instrument_id", "<u8"), ("exchange_ts_ns", "<u8"), ("exchange_sequence", "<u8"),
                             ("n_bids", "<u2"), ("n_asks", "<u2")])
_LEVEL_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8")])
BOOK_DTYPE = np.dtype([
    ("instrument_id", "<u8"), ("exchange_ts_ns", "<u8"), ("exchange_sequence", "<u8"),
    ("side", "u1"), ("level", "<u2"), ("price", "<i8"), ("qty", "<i8"),
])


def _book_rows(value: Any) -> np.ndarray:
    bids, asks = protocol.order_book_levels(value)
    iid, ts, seq = _BOOK_HEAD.unpack_from(value)
    rows = np.empty(len(bids) + len(asks), BOOK_DTYPE)
    rows["instrument_id"], rows["exchange_ts_ns"], rows["exchange_sequence"] = iid, ts, seq
    for side, levels, at in ((0, bids, 0), (1, asks, len(bids))):
        part = rows[at : at + len(levels)]
        part["side"], part["level"] = side, np.arange(len(levels))
        part["price"], part["qty"] = levels["price"], levels["qty"]
    return rows


def _book_block(data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
    heads, _, ok, message, within, levels = _heads_and_elements(
        data, offsets, lengths, _BOOK_HEAD_DTYPE, _LEVEL_DTYPE,
        lambda h: h["n_bids"].astype(np.int64) + h["n_asks"])
    rows = np.empty(len(message), BOOK_DTYPE)
    for name in ("instrument_id", "exchange_ts_ns", "exchange_sequence"):
        rows[name] = heads[name][message]
    bids = heads["n_bids"][message].astype(np.int64)
    ask = within >= bids
    rows["side"] = ask
    rows["level"] = np.where(ask, within - bids, within)
    rows["price"], rows["qty"] = levels["price"], levels["qty"]
    return rows, message, ok


_ARB = protocol.LAYOUTS[TLVType.ARBITRAGE_SIGNAL]
ARB_DTYPE = np.dtype(_ARB.numpy_fields())


def _arbitrage_rows(value: Any) -> np.ndarray:
    head = _ARB.head_size
    if len(value) < head or len(value) != head + 8 * value[head - 1]:
        raise protocol.MalformedFrame("ArbitrageSignal path count does not match the value size")
    return np.frombuffer(value, ARB_DTYPE, 1).copy()  # the path's hops are not stored; n_path is


_BOOK_COLUMNS = (("exchange_ts_ns", "u64"), ("exchange_sequence", "u64"))
TABLES: tuple[TableSpec, ...] = (
    _fixed_table("trades", TLVType.TRADE),
    _fixed_table("quotes", TLVType.QUOTE),
    TableSpec("book_snapshots", TLVType.ORDER_BOOK, BOOK_DTYPE,
              (*_BOOK_COLUMNS, ("side", "u8"), ("level", "u16"), ("price", "fixed"), ("qty", "fixed")), _book_rows,
              rows_from_values=_book_block),
    TableSpec("book_deltas", TLVType.ORDER_BOOK_DELTA, DELTA_DTYPE,
              (*_BOOK_COLUMNS, ("prev_sequence", "u64"), ("flags", "u8"), ("side", "u8"), ("price", "fixed"),
               ("qty", "fixed")), _delta_rows, rows_from_values=_delta_block),
    _fixed_table("bars", TLVType.BAR),
    _fixed_table("swaps", TLVType.POOL_SWAP, {"amount_in": "decimals_in", "amount_out": "decimals_out"}),
    _fixed_table("pool_mints", TLVType.POOL_MINT, {"amount0": "decimals0", "amount1": "decimals1"}),
    _fixed_table("pool_burns", TLVType.POOL_BURN, {"amount0": "decimals0", "amount1": "decimals1"}),
    _fixed_table("pool_syncs", TLVType.POOL_SYNC, {"reserve0": "decimals0", "reserve1": "decimals1"}),
    _fixed_table("pool_retractions", TLVType.POOL_EVENT_RETRACTION),
    TableSpec("arbitrage_signals", TLVType.ARBITRAGE_SIGNAL, ARB_DTYPE, _head_columns(_ARB), _arbitrage_rows),
)
TABLE_NAMES = tuple(t.name for t in TABLES)
BY_TYPE: dict[int, TableSpec] = {int(t.tlv_type): t for t in TABLES}


# -- columns ----------------------------------------------------------------------------------------
def _decimals(values: np.ndarray) -> pa.Array:
    """i64 fixed point as decimal128(19, 8), built from buffers: no Python object per value."""
    values = np.ascontiguousarray(values, dtype="<i8")
    words = np.empty((len(values), 2), dtype="<i8")
    words[:, 0] = values
    words[:, 1] = values >> 63  # sign extension to 128 bits
    return pa.Array.from_buffers(DECIMAL, len(values), [None, pa.py_buffer(words)])


def _timestamps(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.array(values.astype("<i8"), type=TIMESTAMP, mask=values == 0)


def _big_ints(values: np.ndarray) -> list[int]:
    return [int.from_bytes(raw, "little") for raw in values.tolist()]


def _columns_of(spec: TableSpec, rows: np.ndarray) -> dict[str, pa.Array]:
    out: dict[str, pa.Array] = {}
    for name, kind in spec.columns:
        values = rows[name]
        if kind == "fixed":
            out[name] = _decimals(values)
            out[f"{name}_float"] = pa.array(values / protocol.PRICE_SCALE, pa.float64())
        elif kind == "u64" and name.endswith("_ns") and name != "duration_ns":
            out[name[:-3]] = _timestamps(values)
        elif kind in ("u128", "u160", "u256", "i256"):
            ints = _big_ints(values)
            out[name] = pa.array([str(v) for v in ints], pa.string())
            if name in spec.scaled:
                decimals = rows[spec.scaled[name]].tolist()
                out[f"{name}_float"] = pa.array([v / 10**d for v, d in zip(ints, decimals, strict=True)], pa.float64())
        elif kind in ("address", "bytes32"):
            out[name] = pa.array(["0x" + raw.hex() for raw in values.tolist()], pa.string())
        else:
            out[name] = pa.array(np.ascontiguousarray(values))
    return out


def build_table(spec: TableSpec, rows: np.ndarray, header: np.ndarray,
                names: Mapping[int, tuple[str | None, str | None]]) -> pa.Table:
    """The Arrow table of ``rows`` with their message ``header`` columns (ts, source, sequence)."""
    ids = np.ascontiguousarray(rows["instrument_id"])
    unique, inverse = np.unique(ids, return_inverse=True)
    resolved = [names.get(i, (None, None)) for i in unique.tolist()]
    take = pa.array(inverse.astype(np.int32))
    columns: dict[str, pa.Array] = {
        "ts": _timestamps(header["ts"]),
        "venue": pa.array([v for v, _ in resolved], pa.string()).take(take),
        "symbol": pa.array([s for _, s in resolved], pa.string()).take(take),
        "instrument_id": pa.array(ids),
        **_columns_of(spec, rows),
        "source": pa.array(np.ascontiguousarray(header["source"])),
        "sequence": pa.array(np.ascontiguousarray(header["sequence"])),
    }
    return pa.table(columns)

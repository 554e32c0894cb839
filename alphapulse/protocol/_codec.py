"""The machinery behind the layout table: wire kinds, layout rows, generated records, codecs.

A layout is a fixed head (scalar fields, reserved padding and element counts) optionally
followed by tails (arrays, a byte blob, a UTF-8 text). From one layout we derive the frozen
record class, the encoder, the decoder, the numpy dtype of fixed-size values and the docs; the
table itself lives in ``_layouts.py`` and is the only place a byte position is written down.

Decoders raise MalformedFrame (the peer sent it); encoders raise LocalProtocolError (we asked
for something that does not fit).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from collections.abc import Callable, Sequence
from typing import Any

from alphapulse.protocol._errors import LocalProtocolError, MalformedFrame
from alphapulse.protocol._types import TLVType


@dataclasses.dataclass(frozen=True)
class Kind:
    """A wire type: how many bytes, which struct code, and the Python value it maps to."""

    name: str
    size: int
    code: str
    """struct format code; ``Ns`` kinds carry bytes that ``to_wire``/``from_wire`` convert."""
    py: type
    doc: str
    to_wire: Callable[[Any], Any] | None = None
    from_wire: Callable[[Any], Any] | None = None


def _int_bytes(size: int, signed: bool) -> tuple[Callable[[int], bytes], Callable[[bytes], int]]:
    def to_wire(value: int) -> bytes:
        return int(value).to_bytes(size, "little", signed=signed)

    def from_wire(raw: bytes) -> int:
        return int.from_bytes(raw, "little", signed=signed)

    return to_wire, from_wire


def _exact_bytes(size: int) -> Callable[[bytes], bytes]:
    def to_wire(value: bytes) -> bytes:
        if len(value) != size:
            raise ValueError(f"needs exactly {size} bytes, got {len(value)}")
        return bytes(value)

    return to_wire


U8 = Kind("u8", 1, "B", int, "unsigned 8-bit")
U16 = Kind("u16", 2, "H", int, "unsigned 16-bit LE")
U32 = Kind("u32", 4, "I", int, "unsigned 32-bit LE")
U64 = Kind("u64", 8, "Q", int, "unsigned 64-bit LE")
I8 = Kind("i8", 1, "b", int, "signed 8-bit")
I32 = Kind("i32", 4, "i", int, "signed 32-bit LE")
I64 = Kind("i64", 8, "q", int, "signed 64-bit LE")
FIXED = Kind("fixed", 8, "q", int, "i64 fixed-point, value x 10^8 (PRICE_SCALE)")
U128 = Kind("u128", 16, "16s", int, "unsigned 128-bit LE", *_int_bytes(16, False))
U160 = Kind("u160", 20, "20s", int, "unsigned 160-bit LE", *_int_bytes(20, False))
U256 = Kind("u256", 32, "32s", int, "unsigned 256-bit LE (raw token units)", *_int_bytes(32, False))
I256 = Kind("i256", 32, "32s", int, "signed 256-bit LE two's complement", *_int_bytes(32, True))
ADDRESS = Kind("address", 20, "20s", bytes, "20-byte EVM address, as on chain", _exact_bytes(20))
HASH32 = Kind("bytes32", 32, "32s", bytes, "32 raw bytes (hash, topic), as on chain", _exact_bytes(32))

_NUMPY_CODES = {"B": "u1", "H": "<u2", "I": "<u4", "Q": "<u8", "b": "i1", "i": "<i4", "q": "<i8"}


REQUIRED: Any = type("REQUIRED", (), {"__repr__": lambda self: "REQUIRED"})()
"""Marks a record field without a default (``dataclasses.MISSING`` cannot be a field default)."""


@dataclasses.dataclass(frozen=True)
class Field:
    """A scalar field of the head that appears in the record."""

    name: str
    kind: Kind
    doc: str
    default: Any = REQUIRED


@dataclasses.dataclass(frozen=True)
class Pad:
    """Reserved bytes: written as zeros, ignored when read (room for later fields)."""

    size: int
    doc: str = "reserved, zero"


@dataclasses.dataclass(frozen=True)
class Count:
    """A head field holding the number of elements of a tail; derived, not in the record."""

    name: str
    kind: Kind
    of: str
    doc: str = ""


@dataclasses.dataclass(frozen=True)
class Array:
    """A tail of ``count`` elements; one-kind elements become ``tuple[int|bytes, ...]``,
    several kinds ``tuple[tuple, ...]``."""

    name: str
    elements: tuple[tuple[str, Kind], ...]
    doc: str

    @property
    def element_size(self) -> int:
        return sum(kind.size for _, kind in self.elements)


@dataclasses.dataclass(frozen=True)
class Blob:
    """A tail of raw bytes whose length is a Count in the head."""

    name: str
    doc: str


@dataclasses.dataclass(frozen=True)
class Text:
    """A UTF-8 tail taking the rest of the value (so it must be last)."""

    name: str
    doc: str


HeadItem = Field | Pad | Count
Tail = Array | Blob | Text


class Layout:
    """One row of the table: a TLV type's byte layout, record class and codec."""

    def __init__(
        self,
        tlv_type: TLVType,
        doc: str,
        head: Sequence[HeadItem],
        tails: Sequence[Tail] = (),
        *,
        size: int | None = None,
        scoped: bool,
    ) -> None:
        self.tlv_type = TLVType(tlv_type)
        self.name = self.tlv_type.title
        self.doc = doc
        self.head = tuple(head)
        self.tails = tuple(tails)
        self.scoped = scoped
        """Instrument-scoped: the value starts with ``instrument_id: u64`` (read blind)."""
        self.head_struct = struct.Struct("<" + "".join(_code(item) for item in self.head))
        self.head_size = self.head_struct.size
        self.fixed_size = None if self.tails else self.head_size
        if size is not None and size != self.fixed_size:
            raise AssertionError(f"{self.name}: table says {size} B, fields make {self.fixed_size}")
        first = self.head[0]
        if scoped and not (isinstance(first, Field) and first.name == "instrument_id" and first.kind is U64):
            raise AssertionError(f"{self.name}: scoped values must start with instrument_id u64")
        self._check_tails()
        self.fields = self._record_fields()
        self.record = self._make_record()
        self._encoder = self._compile_encoder()
        self._decoder = self._compile_decoder()

    # -- construction -------------------------------------------------------------------------

    def _check_tails(self) -> None:
        counts = {item.of for item in self.head if isinstance(item, Count)}
        needs = {tail.name for tail in self.tails if not isinstance(tail, Text)}
        if counts != needs:
            raise AssertionError(f"{self.name}: counts {counts} do not match tails {needs}")
        if any(isinstance(tail, Text) for tail in self.tails[:-1]):
            raise AssertionError(f"{self.name}: a Text tail must be last")

    def _record_fields(self) -> tuple[str, ...]:
        names = [item.name for item in self.head if isinstance(item, Field)]
        return (*names, *(tail.name for tail in self.tails))

    def _make_record(self) -> type:
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for item in self.head:
            if isinstance(item, Field):
                if item.default is REQUIRED:
                    spec.append((item.name, item.kind.py))
                else:
                    spec.append((item.name, item.kind.py, dataclasses.field(default=item.default)))
        for tail in self.tails:
            spec.append((tail.name, _tail_type(tail)))
        # defaults must come last in a dataclass; the table orders fields by wire position, so
        # we only allow defaults on trailing head fields and tails have none: check it here.
        seen_default = False
        for entry in spec:
            if len(entry) == 3:
                seen_default = True
            elif seen_default:
                raise AssertionError(f"{self.name}: {entry[0]} lacks a default but follows one")
        cls = dataclasses.make_dataclass(
            self.name,
            spec,
            frozen=True,
            namespace={
                "__doc__": self.doc,
                "TLV_TYPE": self.tlv_type,
                "__module__": "alphapulse.protocol",
            },
        )
        cls.TLV_TYPE = self.tlv_type
        return cls

    def _compile_encoder(self) -> Callable[[Any], bytes]:
        scalar = [item for item in self.head if isinstance(item, Field)]
        plain = not self.tails and all(f.kind.to_wire is None for f in scalar)
        head_struct = self.head_struct
        if plain:
            getter = operator.attrgetter(*[f.name for f in scalar])
            single = len(scalar) == 1
            name = self.name

            def encode_plain(record: Any) -> bytes:
                try:
                    if single:
                        return head_struct.pack(getter(record))
                    return head_struct.pack(*getter(record))
                except struct.error as exc:
                    raise LocalProtocolError(f"cannot encode {name}: {exc}") from None

            return encode_plain

        tails = self.tails
        head_items = [item for item in self.head if not isinstance(item, Pad)]
        tail_structs = {
            tail.name: struct.Struct("<" + "".join(k.code for _, k in tail.elements))
            for tail in tails
            if isinstance(tail, Array)
        }

        def encode(record: Any) -> bytes:
            parts: list[bytes] = []
            lengths: dict[str, int] = {}
            for tail in tails:
                value = getattr(record, tail.name)
                if isinstance(tail, Array):
                    st = tail_structs[tail.name]
                    single = len(tail.elements) == 1
                    chunk = bytearray()
                    for element in value:
                        items = (element,) if single else tuple(element)
                        if len(items) != len(tail.elements):
                            raise ValueError(f"{element!r} needs {len(tail.elements)} items")
                        wire = [_to_wire(k, v) for (_, k), v in zip(tail.elements, items, strict=True)]
                        chunk += st.pack(*wire)
                    lengths[tail.name] = len(value)
                    parts.append(bytes(chunk))
                elif isinstance(tail, Blob):
                    raw = bytes(value)
                    lengths[tail.name] = len(raw)
                    parts.append(raw)
                else:
                    parts.append(str(value).encode("utf-8"))
            args = []
            for item in head_items:
                if isinstance(item, Count):
                    args.append(lengths[item.of])
                else:
                    args.append(_to_wire(item.kind, getattr(record, item.name)))
            return head_struct.pack(*args) + b"".join(parts)

        def encode_checked(record: Any) -> bytes:
            try:
                return encode(record)
            except (struct.error, OverflowError, ValueError, TypeError) as exc:
                raise LocalProtocolError(f"cannot encode {self.name}: {exc}") from None

        return encode_checked

    def _compile_decoder(self) -> Callable[[bytes | memoryview], Any]:
        cls = self.record
        head_struct = self.head_struct
        head_size = self.head_size
        items = [item for item in self.head if not isinstance(item, Pad)]
        scalar_plain = all(not isinstance(i, Field) or i.kind.from_wire is None for i in items)
        if not self.tails and scalar_plain:
            name = self.name
            make = record_factory(cls, self.fields)

            def decode_plain(value: bytes | memoryview) -> Any:
                if len(value) != head_size:
                    raise MalformedFrame(f"{name} value is {len(value)} bytes, not {head_size}")
                return make(head_struct.unpack_from(value))

            return decode_plain

        tails = self.tails
        tail_structs = {
            tail.name: struct.Struct("<" + "".join(k.code for _, k in tail.elements))
            for tail in tails
            if isinstance(tail, Array)
        }

        def decode(value: bytes | memoryview) -> Any:
            if len(value) < head_size:
                raise MalformedFrame(f"{self.name} value of {len(value)} bytes < head {head_size}")
            raw = head_struct.unpack_from(value)
            kwargs: dict[str, Any] = {}
            counts: dict[str, int] = {}
            for item, v in zip(items, raw, strict=True):
                if isinstance(item, Count):
                    counts[item.of] = v
                else:
                    conv = item.kind.from_wire
                    kwargs[item.name] = conv(v) if conv else v
            pos = head_size
            for tail in tails:
                if isinstance(tail, Array):
                    st = tail_structs[tail.name]
                    end = pos + counts[tail.name] * st.size
                    if end > len(value):
                        raise MalformedFrame(f"{self.name}.{tail.name} runs past the value")
                    convs = [k.from_wire for _, k in tail.elements]
                    elements = []
                    for element in st.iter_unpack(value[pos:end]):
                        element = tuple(c(e) if c else e for c, e in zip(convs, element, strict=True))
                        elements.append(element[0] if len(element) == 1 else element)
                    kwargs[tail.name] = tuple(elements)
                    pos = end
                elif isinstance(tail, Blob):
                    end = pos + counts[tail.name]
                    if end > len(value):
                        raise MalformedFrame(f"{self.name}.{tail.name} runs past the value")
                    kwargs[tail.name] = bytes(value[pos:end])
                    pos = end
                else:
                    try:
                        kwargs[tail.name] = bytes(value[pos:]).decode("utf-8")
                    except UnicodeDecodeError:
                        raise MalformedFrame(f"{self.name}.{tail.name} is not UTF-8") from None
                    pos = len(value)
            if pos != len(value):
                raise MalformedFrame(f"{self.name} value has {len(value) - pos} trailing bytes")
            return cls(**kwargs)

        return decode

    # -- use ----------------------------------------------------------------------------------

    def encode_value(self, record: Any) -> bytes:
        return self._encoder(record)

    def decode_value(self, value: bytes | memoryview) -> Any:
        return self._decoder(value)

    def rows(self) -> list[tuple[int | str, int | str, str, str, str]]:
        """(offset, size, field, type, meaning) per head item then per tail, for the docs."""
        out: list[tuple[int | str, int | str, str, str, str]] = []
        offset = 0
        for item in self.head:
            if isinstance(item, Pad):
                out.append((offset, item.size, "(reserved)", f"{item.size} bytes", item.doc))
                offset += item.size
            elif isinstance(item, Count):
                blob = any(isinstance(t, Blob) and t.name == item.of for t in self.tails)
                default = f"length of `{item.of}` in bytes" if blob else f"number of `{item.of}`"
                out.append((offset, item.kind.size, item.name, item.kind.name, item.doc or default))
                offset += item.kind.size
            else:
                out.append((offset, item.kind.size, item.name, item.kind.name, item.doc))
                offset += item.kind.size
        where: str = f"{offset}"
        for tail in self.tails:
            if isinstance(tail, Array):
                parts = ", ".join(f"{n} {k.name}" for n, k in tail.elements)
                count = self._count_of(tail.name)
                size = f"{count} x {tail.element_size}"
                out.append((where, size, tail.name, f"[{parts}]", tail.doc))
            elif isinstance(tail, Blob):
                out.append((where, self._count_of(tail.name), tail.name, "bytes", tail.doc))
            else:
                out.append((where, "rest", tail.name, "UTF-8 text", tail.doc))
            where = f"after `{tail.name}`"  # later offsets depend on earlier counts
        return out

    def _count_of(self, tail: str) -> str:
        return next(c.name for c in self.head if isinstance(c, Count) and c.of == tail)

    def numpy_fields(self) -> list[tuple[str, str]]:
        """numpy dtype fields of the head (pads as void), for zero-copy structured views."""
        out: list[tuple[str, str]] = []
        for i, item in enumerate(self.head):
            if isinstance(item, Pad):
                out.append((f"_pad{i}", f"V{item.size}"))
            else:
                code = item.kind.code
                out.append((item.name, _NUMPY_CODES.get(code, f"V{item.kind.size}")))
        return out


def record_factory(cls: type, names: Sequence[str]) -> Callable[[Sequence[Any]], Any]:
    """A fast constructor for a frozen (non-slots) dataclass from values in field order.

    The generated ``__init__`` of a frozen dataclass pays an ``object.__setattr__`` call per
    field; decoding fills the instance dict directly, about three times faster. Values are
    trusted (they come from ``struct``), so no validation is skipped that ``__init__`` did.
    """
    targets = ", ".join(f"d[{name!r}]" for name in names)
    src = f"def make(values):\n    o = new(cls)\n    d = o.__dict__\n    {targets}, = values\n    return o\n"
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(src, namespace)  # the same technique dataclasses itself uses to build __init__
    return namespace["make"]


def _code(item: HeadItem) -> str:
    if isinstance(item, Pad):
        return f"{item.size}x"
    return item.kind.code


def _to_wire(kind: Kind, value: Any) -> Any:
    return kind.to_wire(value) if kind.to_wire else value


def _tail_type(tail: Tail) -> Any:
    if isinstance(tail, Text):
        return str
    if isinstance(tail, Blob):
        return bytes
    if len(tail.elements) == 1:
        return tuple[tail.elements[0][1].py, ...]
    return tuple[tuple[int, ...], ...]

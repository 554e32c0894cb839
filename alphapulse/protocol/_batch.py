"""numba kernels for the hot loop: frame scanning, CRC-32 over batches, columns, trade batches.

Kernels take ``np.uint8`` arrays (read-only views of ``bytes`` are fine) and never allocate per
message. CRC-32 is table driven over the zlib polynomial (slicing-by-16 for the header, by-8
for payloads); the checksum field is zeroed logically (header[0:28], four zero bytes, payload),
so verifying needs no copy. Batches compute four messages' CRCs at once (_crc4: independent
chains interleaved so their table lookups overlap), including inside the frame scanner, which
verifies runs of found frames together. Measured on the reference 2-core box
(``benchmarks/protocol.py``), 72-byte messages, one thread: ~44 M msgs/s (one chain at a time
was 25 M/s, one ``zlib.crc32`` call per message ~3 M/s), so batches use numba and single
messages built in Python use zlib (a numba call costs more than zlib's whole CRC there).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, types, uint16, uint32, uint64
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from alphapulse.protocol._errors import LocalProtocolError
from alphapulse.protocol._header import HEADER_SIZE, MAGIC, MAX_PAYLOAD_SIZE, PROTOCOL_VERSION
from alphapulse.protocol._layouts import LAYOUTS
from alphapulse.protocol._types import EXTENDED_TLV_MARKER, TLVType

# error kinds, indexes into the scan kernel's error counter array
ERR_BAD_MAGIC = 0
ERR_BAD_VERSION = 1
ERR_OVERSIZE = 2
ERR_BAD_CHECKSUM = 3
ERR_TRUNCATED = 4
N_ERROR_KINDS = 5


def _crc_tables() -> np.ndarray:
    tables = np.zeros((16, 256), dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        tables[0, i] = c
    for i in range(256):
        c = int(tables[0, i])
        for k in range(1, 16):
            c = int(tables[0, c & 0xFF]) ^ (c >> 8)
            tables[k, i] = c
    return tables


CRC_TABLES = _crc_tables().reshape(-1)
"""The 16 slicing-by-16 tables (16 KiB, fits L1), flat: table k at [256 k, 256 (k + 1)); table k
maps a byte to its CRC contribution k bytes further on, so the first 8 are the slicing-by-8 set.
Writable, though no kernel writes it: numba's dispatcher types a writable array argument on a
fast path, a read-only one on a slower one (read-only tables made small scans 1-2% slower). A
kernel that reads it as a global sees it read-only (numba freezes global arrays): ``read_only``."""

_SCOPED = np.zeros(256, dtype=np.uint8)
for _layout in LAYOUTS.values():
    if _layout.scoped:
        _SCOPED[int(_layout.tlv_type)] = 1
SCOPED_TYPES = _SCOPED
"""1 at the index of every instrument-scoped TLV type (value starts with instrument_id u64)."""


@intrinsic
def read_only(typingctx, array):
    """``array`` typed read-only, inside a kernel (no copy): what :func:`as_readonly_u8` does at
    the Python boundary, for a kernel that hands its own writable buffer to a read-only one, so
    that one is compiled once (numba compiles per argument type, and mutability is part of it)."""

    def codegen(context, builder, signature, args):
        return impl_ret_borrowed(context, builder, signature.return_type, args[0])

    return array.copy(readonly=True)(array), codegen


def _flat(array, dtype) -> bool:
    """Whether ``array`` (a numba type) is a 1-D C-contiguous array of ``dtype``: what the
    intrinsics below index with plain pointer arithmetic. Anything else fails to type (an error
    at compile time, not a wrong read)."""
    return isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C" and array.dtype == dtype


def _load_codegen(bits: int):
    """Code for an unaligned little-endian load of ``bits`` at byte ``i`` of a uint8 array: one
    instruction. Written as LLVM IR, not as numba Python assembling the bytes: numba inlines a
    jitted helper by copying its IR into every call site, and the CRC kernels, which read a
    word per four bytes, took 20 s each to compile that way (``_first_bad``: 20 → 4 s)."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        at = context.cast(builder, args[1], signature.args[1], types.intp)
        word = builder.bitcast(builder.gep(data, [at]), llvm_ir.IntType(bits).as_pointer())
        value = builder.load(word, align=1)
        return value if sys.byteorder == "little" else builder.bswap(value)

    return codegen


def _little_endian_load(result: types.Integer):
    """The intrinsic ``f(buf, i)``: the little-endian ``result`` at byte ``i`` of the uint8
    array ``buf`` (no bounds check)."""
    bits = result.bitwidth

    def typer(typingctx, buf, i):
        if _flat(buf, types.uint8) and isinstance(i, types.Integer):
            return result(buf, i), _load_codegen(bits)
        return None

    typer.__name__ = typer.__qualname__ = f"_u{bits}"
    return intrinsic(typer)


_u16, _u32, _u64 = _little_endian_load(uint16), _little_endian_load(uint32), _little_endian_load(uint64)


@njit(cache=True, inline="always")
def _put32(buf, i, v):
    buf[i] = np.uint8(v & np.uint32(0xFF))
    buf[i + 1] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
    buf[i + 2] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
    buf[i + 3] = np.uint8((v >> np.uint32(24)) & np.uint32(0xFF))


# Unsigned constants and indexes throughout: numba skips the negative-index wraparound check
# for unsigned integers, which is worth ~25% in this loop.
_M8 = np.uint32(0xFF)
_S8 = np.uint32(8)
_ONES = np.uint32(0xFFFFFFFF)


def _slicing_codegen(top: int):
    """Code for one slicing-by-(top + 1) step: the CRC state XORed into the first word, then byte
    k of the step looked up in table ``top - k`` and the lookups XORed together. LLVM IR for the
    same reason as :func:`_load_codegen`: the steps are most of the CRC kernels' code."""

    def codegen(context, builder, signature, args):
        tables = context.make_array(signature.args[0])(context, builder, args[0]).data
        i32 = llvm_ir.IntType(32)
        words = [builder.xor(args[2], args[1]), *args[3:]]
        result = None
        for k in range(4 * len(words)):
            byte = builder.and_(builder.lshr(words[k // 4], i32(8 * (k % 4))), i32(0xFF))
            entry = builder.load(builder.gep(tables, [builder.or_(byte, i32((top - k) << 8))]), align=4)
            result = entry if result is None else builder.xor(result, entry)
        return result

    return codegen


@intrinsic
def _step(typingctx, t, crc, one, two):
    """One slicing-by-8 step over 8 input bytes given as two little-endian words."""
    return (uint32(t, uint32, uint32, uint32), _slicing_codegen(7)) if _flat(t, types.uint32) else None


@intrinsic
def _step16(typingctx, t, crc, one, two, three, four):
    """One slicing-by-16 step over 16 input bytes given as four little-endian words."""
    return (uint32(t, uint32, uint32, uint32, uint32, uint32), _slicing_codegen(15)) if _flat(t, types.uint32) else None


@intrinsic
def _step16_zero_tail(typingctx, t, crc, one, two, three):
    """A slicing-by-16 step over 12 input bytes and four zero bytes, whose lookups are left out
    (every table maps byte 0 to 0)."""
    return (uint32(t, uint32, uint32, uint32, uint32), _slicing_codegen(15)) if _flat(t, types.uint32) else None


@njit(cache=True, inline="always")
def _head(t, buf, off):
    """CRC state after the 32-byte header at ``off`` (uint64), its checksum field read as zeros.

    Two slicing-by-16 steps; in the second the last word (the checksum field) is zero, and the
    tables map byte 0 to 0, so its four lookups are left out.
    """
    crc = _step16(
        t,
        _ONES,
        _u32(buf, off),
        _u32(buf, off + uint64(4)),
        _u32(buf, off + uint64(8)),
        _u32(buf, off + uint64(12)),
    )
    return _step16_zero_tail(
        t, crc, _u32(buf, off + uint64(16)), _u32(buf, off + uint64(20)), _u32(buf, off + uint64(24))
    )


@njit(cache=True, inline="always")
def _tail(t, crc, buf, i, end):
    """Finish a CRC: feed buf[i:end] (uint64 indexes) into state ``crc``, return the CRC."""
    while i + uint64(16) <= end:
        crc = _step16(
            t, crc, _u32(buf, i), _u32(buf, i + uint64(4)), _u32(buf, i + uint64(8)), _u32(buf, i + uint64(12))
        )
        i += uint64(16)
    if i + uint64(8) <= end:
        crc = _step(t, crc, _u32(buf, i), _u32(buf, i + uint64(4)))
        i += uint64(8)
    while i < end:
        crc = (crc >> _S8) ^ t[(crc ^ uint32(buf[i])) & _M8]
        i += uint64(1)
    return crc ^ _ONES


@njit(cache=True, inline="always")
def _crc1(t, buf, off, end):
    """CRC of the message at buf[off:end] (uint64), its checksum field read as zeros."""
    return _tail(t, _head(t, buf, off), buf, off + uint64(HEADER_SIZE), end)


@njit(cache=True, inline="always")
def _crc4(t, buf, oa, ea, ob, eb, oc, ec, od, ed):
    """CRCs of four messages (uint64 offsets and ends) computed together.

    One CRC chain is latency bound (each step waits on the previous step's table lookups);
    four independent chains interleaved in one loop let the CPU overlap their lookups, ~1.8x
    the throughput. The chains advance 8 bytes at a time while all four have 8 bytes left,
    then each finishes alone.
    """
    ca = _head(t, buf, oa)
    cb = _head(t, buf, ob)
    cc = _head(t, buf, oc)
    cd = _head(t, buf, od)
    ia = oa + uint64(HEADER_SIZE)
    ib = ob + uint64(HEADER_SIZE)
    ic = oc + uint64(HEADER_SIZE)
    id_ = od + uint64(HEADER_SIZE)
    while ia + uint64(8) <= ea and ib + uint64(8) <= eb and ic + uint64(8) <= ec and id_ + uint64(8) <= ed:
        ca = _step(t, ca, _u32(buf, ia), _u32(buf, ia + uint64(4)))
        cb = _step(t, cb, _u32(buf, ib), _u32(buf, ib + uint64(4)))
        cc = _step(t, cc, _u32(buf, ic), _u32(buf, ic + uint64(4)))
        cd = _step(t, cd, _u32(buf, id_), _u32(buf, id_ + uint64(4)))
        ia += uint64(8)
        ib += uint64(8)
        ic += uint64(8)
        id_ += uint64(8)
    return _tail(t, ca, buf, ia, ea), _tail(t, cb, buf, ib, eb), _tail(t, cc, buf, ic, ec), _tail(t, cd, buf, id_, ed)


@njit(cache=True, inline="always")
def _crc4_at(t, buf, offsets, sizes, k):
    """_crc4 of messages k .. k+3 (k uint64) of an offsets/sizes batch."""
    oa = uint64(offsets[k])
    ob = uint64(offsets[k + uint64(1)])
    oc = uint64(offsets[k + uint64(2)])
    od = uint64(offsets[k + uint64(3)])
    return _crc4(
        t,
        buf,
        oa,
        oa + uint64(sizes[k]),
        ob,
        ob + uint64(sizes[k + uint64(1)]),
        oc,
        oc + uint64(sizes[k + uint64(2)]),
        od,
        od + uint64(sizes[k + uint64(3)]),
    )


@njit(cache=True, inline="always")
def _stored(buf, off):
    """The checksum field of the message at off (any integer)."""
    return _u32(buf, uint64(off) + uint64(28))


@njit(cache=True)
def _message_crc(t, buf, offset, length):
    """CRC-32 of the message at buf[offset:offset+length], its checksum field read as zeros.
    Callers pass ``t`` and ``buf`` read-only (as few_frames' global ``CRC_TABLES`` and bytes are)
    and ``int64`` bounds, so it is compiled once (see ``read_only``)."""
    off = uint64(offset)
    return _crc1(t, buf, off, off + uint64(length))


@njit(cache=True, nogil=True)
def few_frames(buf, n, max_payload, verify, sizes):
    """The decoder's quick path for a small read: ``buf[:n]`` as whole, valid data frames back
    to back, at most ``sizes.shape[0]`` of them (their sizes are written there). Returns
    (count, source of the first, its sequence, whether every frame runs on from it, the relay
    domain of all or -1 when mixed); count is 0 when anything is not so: a header check, a CRC
    (with ``verify``), a control frame, bytes left over. With the caches cold one call costs
    about what two frames cost checked with ``struct`` and ``zlib``, and little more per frame."""
    at = np.int64(0)
    count = 0
    source = np.int64(-1)
    first = uint64(0)
    domain = np.int64(-1)
    consecutive = True
    while at < n:
        if count == sizes.shape[0] or n - at < HEADER_SIZE:
            return 0, source, first, False, domain
        payload = np.int64(_u32(buf, at + 24))
        end = at + HEADER_SIZE + payload
        sequence = _u64(buf, at + 8)
        if (_u32(buf, at) != MAGIC or buf[at + 4] != PROTOCOL_VERSION or payload > max_payload or end > n
                or sequence == 0):
            return 0, source, first, False, domain
        if verify and _message_crc(CRC_TABLES, buf, at, end - at) != _u32(buf, at + 28):
            return 0, source, first, False, domain
        frame_source = np.int64(_u16(buf, at + 6))
        frame_domain = np.int64(buf[at + 5])
        if count == 0:
            source, first, domain = frame_source, sequence, frame_domain
        else:
            if frame_source != source or sequence != first + uint64(count):
                consecutive = False
            if frame_domain != domain:
                domain = -1
        sizes[count] = end - at
        count += 1
        at = end
    return count, source, first, consecutive, domain


@njit(cache=True)
def _crc32_batch(t, buf, offsets, sizes):
    n = uint64(offsets.shape[0])
    out = np.empty(n, dtype=np.uint32)
    k = uint64(0)
    while k + uint64(4) <= n:
        ca, cb, cc, cd = _crc4_at(t, buf, offsets, sizes, k)
        out[k] = ca
        out[k + uint64(1)] = cb
        out[k + uint64(2)] = cc
        out[k + uint64(3)] = cd
        k += uint64(4)
    while k < n:
        off = uint64(offsets[k])
        out[k] = _crc1(t, buf, off, off + uint64(sizes[k]))
        k += uint64(1)
    return out


@njit(cache=True)
def _verify_batch(t, buf, offsets, sizes):
    """Through :func:`_first_bad`, run on from after each failure: the same four-at-a-time pass
    over a clean batch, and no second copy of the CRC code for numba to compile."""
    n = np.int64(offsets.shape[0])
    out = np.ones(n, dtype=np.bool_)
    k = np.int64(0)
    while k < n:
        bad = _first_bad(t, buf, offsets, sizes, k, n)
        if bad >= n:
            break
        out[bad] = False
        k = bad + np.int64(1)
    return out


@njit(cache=True, parallel=True)
def _verify_batch_parallel(t, buf, offsets, sizes):
    n = offsets.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for g in prange(n // 4):
        k = uint64(g) * uint64(4)
        ca, cb, cc, cd = _crc4_at(t, buf, offsets, sizes, k)
        out[k] = ca == _stored(buf, offsets[k])
        out[k + uint64(1)] = cb == _stored(buf, offsets[k + uint64(1)])
        out[k + uint64(2)] = cc == _stored(buf, offsets[k + uint64(2)])
        out[k + uint64(3)] = cd == _stored(buf, offsets[k + uint64(3)])
    for k in range(n - n % 4, n):
        off = uint64(offsets[k])
        out[k] = _crc1(t, buf, off, off + uint64(sizes[k])) == _stored(buf, off)
    return out


@njit(cache=True)
def _first_bad(t, buf, offsets, sizes, lo, hi):
    """Index of the first message in offsets/sizes[lo:hi] whose CRC is wrong, or hi.

    Checks four at a time (_crc4) and stops after the group holding the first failure.
    """
    k = uint64(lo)
    end = uint64(hi)
    while k + uint64(4) <= end:
        ca, cb, cc, cd = _crc4_at(t, buf, offsets, sizes, k)
        if ca != _stored(buf, offsets[k]):
            return np.int64(k)
        if cb != _stored(buf, offsets[k + uint64(1)]):
            return np.int64(k + uint64(1))
        if cc != _stored(buf, offsets[k + uint64(2)]):
            return np.int64(k + uint64(2))
        if cd != _stored(buf, offsets[k + uint64(3)]):
            return np.int64(k + uint64(3))
        k += uint64(4)
    while k < end:
        off = uint64(offsets[k])
        if _crc1(t, buf, off, off + uint64(sizes[k])) != _stored(buf, off):
            return np.int64(k)
        k += uint64(1)
    return np.int64(end)


@njit(cache=True)
def _is_magic(buf, i):
    return buf[i] == 0xEF and buf[i + 1] == 0xBE and buf[i + 2] == 0xAD and buf[i + 3] == 0xDE


_MAGIC_BYTES = np.array([0xEF, 0xBE, 0xAD, 0xDE], dtype=np.uint8)
assert int.from_bytes(_MAGIC_BYTES.tobytes(), "little") == MAGIC


@njit(cache=True)
def _find_magic(buf, start, n):
    """Index of the next magic at or after start; if there is none, -(k + 1) where k is the
    start of the longest buffer suffix that could still become a magic (n if none)."""
    i = start
    while i + 4 <= n:
        if buf[i] == 0xEF and _is_magic(buf, i):
            return i
        i += 1
    i = max(start, n - 3)
    while i < n:
        ok = True
        for k in range(n - i):
            if buf[i + k] != _MAGIC_BYTES[k]:
                ok = False
                break
        if ok:
            return -(i + 1)
        i += 1
    return -(n + 1)


_RUN = 32
"""_scan checks CRCs in runs of up to this many frames (bounds the work redone after a bad CRC)."""


@njit(cache=True)
def _scan(t, buf, start, max_payload, final, resyncing, verify):
    """Walk buf from start: record valid frames, count and skip bad ones.

    Returns (offsets, sizes, pos, need, errors, skipped, resyncing, control, source, first,
    consecutive, domain); the last four are what :func:`few_frames` says of a small read, for the
    accepted frames (consecutive is False when any is a control frame). ``pos`` is where the caller
    resumes (everything before it is a frame or skipped); ``need`` is how many bytes from ``pos``
    must be buffered before another scan can make progress. ``resyncing`` means "no frame is
    known to start at pos: search for the magic from pos". An error at a position skips one
    byte and resyncs, so a good frame starting anywhere after it is still found. With ``final``
    (EOF) an incomplete frame is an error too.

    Frames whose header checks pass are collected in a run (up to _RUN, stored after the
    ``count`` accepted ones) and their CRCs checked together by _first_bad, four chains at a
    time, when the run is full or the scan reaches anything else (an error, the end, a partial
    frame). A bad CRC cuts the run there: the frames before it are accepted, the bad one counts
    ERR_BAD_CHECKSUM, and the scan restarts one byte after its start, resyncing, exactly as if
    each frame had been checked as soon as it was found. ``control`` counts the accepted frames
    with sequence 0 (control frames), so a link need not look again. Without ``verify`` the CRCs are not
    checked at all (a link from a relay, which checked every frame it forwards).
    """
    n = buf.shape[0]
    cap = (n - start) // HEADER_SIZE + 1
    offsets = np.empty(cap, dtype=np.int64)
    sizes = np.empty(cap, dtype=np.int64)
    errors = np.zeros(N_ERROR_KINDS, dtype=np.int64)
    count = 0  # accepted frames: offsets[:count]
    run = 0  # found after them, CRC not checked yet: offsets[count:count + run]
    skipped = 0
    pos = start
    need = HEADER_SIZE
    while True:
        kind = -1
        stop = False  # wait for more data at pos (need ``wait`` bytes)
        wait = HEADER_SIZE
        if pos >= n:
            stop = True
        else:
            if resyncing:  # only ever with run == 0: an error has just flushed the run
                found = _find_magic(buf, pos, n)
                if found < 0:
                    keep = n if final else -found - 1
                    skipped += keep - pos
                    pos = keep
                    break
                skipped += found - pos
                pos = found
                resyncing = False
            avail = n - pos
            if avail < 4:
                prefix = _find_magic(buf, pos, n) == -(pos + 1)
                if not final and prefix:
                    stop = True
                else:
                    kind = ERR_TRUNCATED if prefix else ERR_BAD_MAGIC
            elif not _is_magic(buf, pos):
                kind = ERR_BAD_MAGIC
            elif avail < HEADER_SIZE:
                if not final:
                    stop = True
                else:
                    kind = ERR_TRUNCATED
            elif buf[pos + 4] != PROTOCOL_VERSION:
                kind = ERR_BAD_VERSION
            else:
                size = HEADER_SIZE + np.int64(_u32(buf, pos + 24))
                if size - HEADER_SIZE > max_payload:
                    kind = ERR_OVERSIZE
                elif avail < size:
                    if not final:
                        stop = True
                        wait = size
                    else:
                        kind = ERR_TRUNCATED
                else:
                    offsets[count + run] = pos
                    sizes[count + run] = size
                    run += 1
                    pos += size
                    if run < _RUN:
                        continue
        # the run is full, or pos holds no frame to add to it: check the run's CRCs first
        if run:
            end = count + run
            # int64 arguments: ``count`` starts as the constant 0, and numba would compile a
            # second _first_bad (4 s on a fresh install) for that literal
            bad = _first_bad(t, buf, offsets, sizes, np.int64(count), np.int64(end)) if verify else end
            run = 0
            if bad < end:
                count = bad
                errors[ERR_BAD_CHECKSUM] += 1
                skipped += 1
                pos = offsets[bad] + 1
                resyncing = True
                continue
            count = end
            if kind == -1 and not stop:
                continue  # the run was full and is good: scan on
        if stop:
            need = wait
            break
        errors[kind] += 1
        skipped += 1
        pos += 1
        resyncing = True
    # one pass over the accepted headers: the control frames (sequence 0) among them, and whether
    # they are one source's sequences running on from the first (then the tracker takes them
    # without decoding a column) and of one relay domain (-1 if mixed)
    control = 0
    source = np.int64(-1)
    first = uint64(0)
    domain = np.int64(-1)
    consecutive = count > 0
    for k in range(count):
        off = offsets[k]
        frame_domain = np.int64(buf[off + 5])
        if k == 0:
            domain = frame_domain
        elif frame_domain != domain:
            domain = -1
        sequence = _u64(buf, off + 8)
        if sequence == 0:
            control += 1
            consecutive = False
            continue
        frame_source = np.int64(_u16(buf, off + 6))
        if source < 0:
            source, first = frame_source, sequence
        elif frame_source != source or sequence != first + uint64(k):
            consecutive = False
    return (offsets[:count], sizes[:count], pos, need, errors, skipped, resyncing, control,
            source, first, consecutive, domain)


@njit(cache=True)
def _frame_bounds(buf):
    """Offsets and sizes of trusted back-to-back frames (our own output: no checks)."""
    n = buf.shape[0]
    cap = n // HEADER_SIZE + 1
    offsets = np.empty(cap, dtype=np.int64)
    sizes = np.empty(cap, dtype=np.int64)
    count = 0
    pos = 0
    while pos + HEADER_SIZE <= n:
        size = HEADER_SIZE + np.int64(_u32(buf, pos + 24))
        offsets[count] = pos
        sizes[count] = size
        count += 1
        pos += size
    return offsets[:count], sizes[:count]


@njit(cache=True)
def _gather(buf, offsets, sizes, total):
    """Copy the frames at offsets/sizes back to back into a new array."""
    out = np.empty(total, dtype=np.uint8)
    j = 0
    for k in range(offsets.shape[0]):
        off = offsets[k]
        for i in range(sizes[k]):
            out[j + i] = buf[off + i]
        j += sizes[k]
    return out


@njit(cache=True)
def _header_columns(buf, offsets, scoped):
    n = offsets.shape[0]
    source = np.empty(n, dtype=np.uint16)
    sequence = np.empty(n, dtype=np.uint64)
    relay = np.empty(n, dtype=np.uint8)
    stamp = np.empty(n, dtype=np.uint64)
    first_type = np.zeros(n, dtype=np.uint8)
    first_instrument = np.zeros(n, dtype=np.uint64)
    for k in range(n):
        off = offsets[k]
        relay[k] = buf[off + 5]
        source[k] = _u16(buf, off + 6)
        sequence[k] = _u64(buf, off + 8)
        stamp[k] = _u64(buf, off + 16)
        payload = np.int64(_u32(buf, off + 24))
        p = off + HEADER_SIZE
        if payload >= 2:
            tlv = buf[p]
            value = p + 2
            length = np.int64(buf[p + 1])
            if tlv == EXTENDED_TLV_MARKER:
                if payload >= 5:
                    tlv = buf[p + 2]
                    value = p + 5
                    length = np.int64(_u16(buf, p + 3))
                else:
                    tlv = 0
                    length = 0
            first_type[k] = tlv
            if scoped[tlv] and length >= 8 and value + 8 <= p + payload:
                first_instrument[k] = _u64(buf, value)
    return source, sequence, relay, stamp, first_type, first_instrument


@njit(cache=True)
def _gather_trades(buf, offsets, sizes, out):
    """Copy each Trade TLV (any position, either TLV form) with its message header into 72-byte
    rows of ``out``; with out of length 0 only count them. Returns the number of trades."""
    rows = 0
    cap = out.shape[0] // 72
    for k in range(offsets.shape[0]):
        off = offsets[k]
        end = off + sizes[k]
        p = off + HEADER_SIZE
        while p + 2 <= end:
            tlv = buf[p]
            value = p + 2
            length = np.int64(buf[p + 1])
            if tlv == EXTENDED_TLV_MARKER:
                if p + 5 > end:
                    break
                tlv = buf[p + 2]
                value = p + 5
                length = np.int64(_u16(buf, p + 3))
            if value + length > end:
                break
            if tlv == 1 and length == 38:
                if rows < cap:
                    r = rows * 72
                    for i in range(HEADER_SIZE):
                        out[r + i] = buf[off + i]
                    out[r + 32] = 1
                    out[r + 33] = 38
                    for i in range(38):
                        out[r + 34 + i] = buf[value + i]
                rows += 1
            p = value + length
    return rows


@njit(cache=True)
def _stamp_checksums(t, buf, n, size):
    """Write the CRC of each of n back-to-back size-byte messages into its checksum field."""
    tables, frames = read_only(t), read_only(buf)  # and int64 bounds: few_frames' _message_crc
    for k in range(n):
        off = k * size
        _put32(buf, off + 28, _message_crc(tables, frames, np.int64(off), np.int64(size)))


@njit(cache=True)
def _placeholders(t, buf, offsets, sizes, keep, total):
    """Frames where keep is true copied whole; the others as 32-byte header-only placeholders
    (payload_size 0, checksum recomputed), so per-source sequences stay contiguous."""
    out = np.empty(total, dtype=np.uint8)
    # read-only and int64 bounds (``j`` is typed the literal 0 first): few_frames' _message_crc
    tables, written = read_only(t), read_only(out)
    out_sizes = np.empty(offsets.shape[0], dtype=np.int64)
    j = 0
    for k in range(offsets.shape[0]):
        off = offsets[k]
        size = sizes[k] if keep[k] else HEADER_SIZE
        for i in range(size):
            out[j + i] = buf[off + i]
        if not keep[k]:
            for i in range(24, 28):
                out[j + i] = 0
            _put32(out, j + 28, _message_crc(tables, written, np.int64(j), np.int64(HEADER_SIZE)))
        out_sizes[k] = size
        j += size
    return out, out_sizes


# -- public wrappers ---------------------------------------------------------------------------

_TRADE = LAYOUTS[TLVType.TRADE]
TRADE_MESSAGE_SIZE = HEADER_SIZE + 2 + _TRADE.head_size
TRADE_MESSAGE_DTYPE = np.dtype(
    [
        ("magic", "<u4"),
        ("version", "u1"),
        ("relay_domain", "u1"),
        ("source", "<u2"),
        ("sequence", "<u8"),
        ("timestamp_ns", "<u8"),
        ("payload_size", "<u4"),
        ("checksum", "<u4"),
        ("tlv_type", "u1"),
        ("tlv_length", "u1"),
        *_TRADE.numpy_fields(),
    ]
)
"""One single-Trade message (header, standard TLV header, Trade value) as a numpy record."""
assert TRADE_MESSAGE_DTYPE.itemsize == TRADE_MESSAGE_SIZE == 72


def as_u8(buf: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """A flat uint8 view of any buffer, without copying."""
    if isinstance(buf, np.ndarray):
        return buf.reshape(-1).view(np.uint8)
    return np.frombuffer(buf, dtype=np.uint8)


def as_readonly_u8(buf: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """:func:`as_u8`, read-only. For the kernels that only read: numba compiles a kernel once per
    argument type, and a writable array is another type than a read-only one (``bytes``). With
    every buffer passed read-only, the CRC kernels are compiled once (seconds each on a fresh
    install), and a node meeting a ``bytearray`` mid-stream does not stop to compile."""
    view = as_u8(buf)
    if view.flags.writeable:
        view = view.view()
        view.flags.writeable = False
    return view


def crc32_batch(buf, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """CRC-32 (checksum field read as zero) of each message at offsets/sizes, as uint32."""
    return _crc32_batch(CRC_TABLES, as_readonly_u8(buf), _i64(offsets), _i64(sizes))


def verify_batch(buf, offsets: np.ndarray, sizes: np.ndarray, *, parallel: bool = False) -> np.ndarray:
    """True for each message whose stored checksum matches its contents.

    ``parallel`` spreads the batch over numba's threads (every core); the default stays on the
    calling thread, since each node is its own process and should not steal its neighbours' cores.
    """
    kernel = _verify_batch_parallel if parallel else _verify_batch
    return kernel(CRC_TABLES, as_readonly_u8(buf), _i64(offsets), _i64(sizes))


def _i64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


class ScanResult(NamedTuple):
    """What :func:`scan_frames` found."""

    offsets: np.ndarray
    sizes: np.ndarray
    end: int
    """resume scanning here: everything before is a frame or skipped"""
    need: int
    """bytes required from ``end`` before a rescan can make progress"""
    errors: np.ndarray
    """counts by kind, indexed by the ERR_* constants"""
    skipped: int
    resyncing: bool
    """no frame is known to start at ``end``; pass it back in"""


def scan_frames(
    buf,
    start: int = 0,
    max_payload: int = MAX_PAYLOAD_SIZE,
    *,
    final: bool = False,
    resyncing: bool = False,
    verify: bool = True,
) -> ScanResult:
    """Find every valid frame in ``buf[start:]`` (CRC checked) in one O(bytes) pass.

    ``end`` is where to resume; ``need`` the bytes required from ``end`` before a rescan can
    progress; ``errors`` counts by kind (ERR_* indexes); ``skipped`` the bytes dropped.
    ``verify=False`` checks magic, version and sizes but not CRCs: for bytes from a peer that
    has checked them already (a relay), where the CRC pass would be most of the cost.
    """
    offsets, sizes, end, need, errors, skipped, resync, *_ = _scan(
        CRC_TABLES, as_readonly_u8(buf), np.int64(start), np.int64(max_payload), bool(final), bool(resyncing),
        bool(verify),
    )
    return ScanResult(offsets, sizes, int(end), int(need), errors, int(skipped), bool(resync))


def header_columns(buf, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """(source, sequence, relay_domain, timestamp_ns, first TLV type, first instrument id) arrays.

    The instrument id is 0 where the first TLV is not instrument-scoped.
    """
    return _header_columns(as_u8(buf), _i64(offsets), SCOPED_TYPES)


def frame_bounds(buf) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, sizes) of frames we built ourselves, back to back; no CRC or magic checks."""
    return _frame_bounds(as_u8(buf))


def placeholder_frames(buf, offsets: np.ndarray, sizes: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(data, sizes): kept frames whole, the rest as header-only placeholders (see _placeholders)."""
    offsets, sizes = _i64(offsets), _i64(sizes)
    total = int(np.where(keep, sizes, HEADER_SIZE).sum())
    return _placeholders(CRC_TABLES, as_u8(buf), offsets, sizes, keep, total)


def gather_frames(buf, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The frames at offsets/sizes copied back to back (one copy for the whole batch)."""
    sizes = _i64(sizes)
    return _gather(as_u8(buf), _i64(offsets), sizes, int(sizes.sum()))


def trade_columns(block) -> np.ndarray:
    """Every Trade in a block as TRADE_MESSAGE_DTYPE records (use ``cols["price"]`` etc.).

    When the block is all single-Trade 72-byte messages (the common case) this is a zero-copy,
    read-only view of ``block.data``; otherwise the Trades are gathered into a new array, one
    row per Trade TLV, each with its message's header fields.
    """
    data = as_u8(block.data)
    sizes = block.sizes
    n = sizes.shape[0]
    if n and data.shape[0] == n * TRADE_MESSAGE_SIZE and bool((sizes == TRADE_MESSAGE_SIZE).all()):
        view = data.view(TRADE_MESSAGE_DTYPE)
        if bool((view["tlv_type"] == 1).all()) and bool((view["tlv_length"] == 38).all()):
            return view
    offsets = _i64(block.offsets)
    count = _gather_trades(data, offsets, _i64(sizes), np.empty(0, dtype=np.uint8))
    out = np.empty(count * TRADE_MESSAGE_SIZE, dtype=np.uint8)
    _gather_trades(data, offsets, _i64(sizes), out)
    return out.view(TRADE_MESSAGE_DTYPE)


def build_trade_batch(
    columns,
    source: int,
    first_sequence: int,
    relay_domain: int,
    timestamp_ns: int | np.ndarray,
) -> bytes:
    """N single-Trade messages back to back, sequences first_sequence.., CRCs filled by numba.

    ``columns`` maps Trade field names (instrument_id, price, quantity, exchange_ts_ns, and
    optionally side, flags) to equal-length arrays; a structured array works too.
    """
    n = len(columns["price"])
    out = np.zeros(n, dtype=TRADE_MESSAGE_DTYPE)
    if not (0 <= source < 1 << 16 and 0 <= relay_domain < 1 << 8):
        raise LocalProtocolError(f"source {source} or relay_domain {relay_domain} out of range")
    if first_sequence < 0 or first_sequence + n >= 1 << 64:
        raise LocalProtocolError("sequence out of range")
    out["magic"] = MAGIC
    out["version"] = PROTOCOL_VERSION
    out["relay_domain"] = relay_domain
    out["source"] = source
    out["sequence"] = np.arange(first_sequence, first_sequence + n, dtype=np.uint64)
    out["timestamp_ns"] = timestamp_ns
    out["payload_size"] = 2 + _TRADE.head_size
    out["tlv_type"] = int(TLVType.TRADE)
    out["tlv_length"] = _TRADE.head_size
    for name in ("instrument_id", "price", "quantity", "exchange_ts_ns"):
        out[name] = columns[name]
    for name in ("side", "flags"):
        if _has(columns, name):
            out[name] = columns[name]
    raw = out.view(np.uint8)
    _stamp_checksums(CRC_TABLES, raw, n, TRADE_MESSAGE_SIZE)
    return raw.tobytes()


def _has(columns, name: str) -> bool:
    names = getattr(getattr(columns, "dtype", None), "names", None)
    return name in names if names is not None else name in columns

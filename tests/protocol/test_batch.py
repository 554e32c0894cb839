"""Batch kernels agree with the one-message paths."""

from __future__ import annotations

import zlib

import numba
import numpy as np
import pytest

import alphapulse.protocol as P
from alphapulse.protocol import _batch as B

from ._records import RECORDS


def _stream():
    builder = P.MessageBuilder(1, 4)
    msgs = [builder.build(record, i) for i, record in enumerate(RECORDS.values())]
    msgs.append(builder.build(list(RECORDS.values())[:5], 99))
    return msgs


def test_crc_batch_matches_zlib():
    msgs = _stream()
    buf = b"".join(msgs)
    sizes = np.array([len(m) for m in msgs], dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes
    crcs = P.crc32_batch(buf, offsets, sizes)
    assert crcs.tolist() == [zlib.crc32(m[:28] + bytes(4) + m[32:]) for m in msgs]
    assert crcs.tolist() == [P.message_checksum(m) for m in msgs]
    assert P.verify_batch(buf, offsets, sizes).all()
    broken = bytearray(buf)
    broken[offsets[3] + 40] ^= 0x80
    ok = P.verify_batch(bytes(broken), offsets, sizes)
    assert ok.tolist() == [i != 3 for i in range(len(msgs))]


def test_crc_all_lengths():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 32 + 300, dtype=np.uint8).tobytes()
    for n in range(0, 300):
        crc = P.crc32_batch(data, np.array([0]), np.array([32 + n]))[0]
        assert crc == zlib.crc32(data[:28] + bytes(4) + data[32 : 32 + n])


def test_scan_frames_public():
    msgs = _stream()
    buf = b"".join(msgs)
    result = P.scan_frames(buf)
    assert result.end == len(buf) and result.skipped == 0
    assert result.sizes.tolist() == [len(m) for m in msgs]
    half = P.scan_frames(buf[: len(buf) - 3])
    assert half.end == len(buf) - len(msgs[-1]) and half.need == len(msgs[-1])


def test_trade_columns_zero_copy_view():
    n = 1000
    cols = {
        "instrument_id": np.arange(n, dtype=np.uint64) * 7,
        "price": np.arange(n, dtype=np.int64) - 500,
        "quantity": np.full(n, 2**63 - 1, dtype=np.int64),
        "exchange_ts_ns": np.arange(n, dtype=np.uint64),
        "side": (np.arange(n) % 3).astype(np.uint8),
    }
    data = P.build_trade_batch(cols, source=12, first_sequence=100, relay_domain=1, timestamp_ns=555)
    assert len(data) == 72 * n
    builder = P.MessageBuilder(1, 12, first_sequence=100)
    for i in (0, 1, n - 1):
        expected = P.Trade(
            int(cols["instrument_id"][i]),
            int(cols["price"][i]),
            int(cols["quantity"][i]),
            int(cols["exchange_ts_ns"][i]),
            int(cols["side"][i]),
        )
        builder.next_sequence = 100 + i
        assert data[72 * i : 72 * (i + 1)] == builder.build(expected, 555)
    decoder = P.FrameDecoder()
    decoder.receive_data(data)
    block = decoder.next_block()
    assert len(block) == n and block.data is data
    view = P.trade_columns(block)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    for name, column in cols.items():
        assert np.array_equal(view[name], column)
    assert np.array_equal(view["sequence"], np.arange(100, 100 + n))


def test_trade_columns_gathers_mixed_blocks():
    builder = P.MessageBuilder(1, 3)
    t1 = RECORDS["trade"]
    t2 = P.Trade(5, -1, 2, 3, P.Side.SELL, 1)
    msgs = [
        builder.build(t1, 1),
        builder.build(P.Heartbeat(1, 2, 3, 4), 2),
        builder.build([RECORDS["quote"], t2, t1], 3),
    ]
    decoder = P.FrameDecoder()
    decoder.receive_data(b"".join(msgs))
    cols = P.trade_columns(decoder.next_block())
    assert len(cols) == 3
    assert cols["price"].tolist() == [t1.price, -1, t1.price]
    assert cols["sequence"].tolist() == [1, 3, 3]
    assert cols["flags"].tolist() == [0, 1, 0]


def test_order_book_views_are_zero_copy():
    book = RECORDS["order_book"]
    raw = P.encode(book)
    [(_, value)] = list(P.iter_tlvs(raw))
    bids, asks = P.order_book_levels(value)
    assert bids.tolist() == list(book.bids) and asks.tolist() == list(book.asks)
    assert np.shares_memory(bids, np.frombuffer(raw, np.uint8))
    delta = RECORDS["order_book_delta"]
    [(_, value)] = list(P.iter_tlvs(P.encode(delta)))
    assert P.order_book_changes(value).tolist() == list(delta.changes)


# -- the interleaved CRC kernels (four chains at a time) and the run-verifying scan ----------------


def _crc_ref(frame: bytes) -> int:
    return zlib.crc32(frame[:28] + bytes(4) + frame[32:])


def _random_frames(rng: np.random.Generator, count: int, max_payload: int = 100) -> list[bytes]:
    """Frames with valid headers and random payload lengths (TLV structure is not checked here)."""
    frames = []
    for _ in range(count):
        payload = rng.integers(0, 256, int(rng.integers(0, max_payload + 1)), dtype=np.uint8).tobytes()
        head = bytearray(rng.integers(0, 256, 32, dtype=np.uint8).tobytes())
        head[0:5] = P.MAGIC.to_bytes(4, "little") + bytes([P.PROTOCOL_VERSION])
        head[24:28] = len(payload).to_bytes(4, "little")
        frame = bytearray(head + payload)
        frame[28:32] = _crc_ref(bytes(frame)).to_bytes(4, "little")
        frames.append(bytes(frame))
    return frames


def _layout(frames: list[bytes], gap: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    sizes = np.array([len(f) for f in frames], dtype=np.int64)
    offsets = np.cumsum(sizes + gap) - sizes - gap
    return (bytes(gap).join(frames) + bytes(gap)), offsets, sizes


def test_crc_batch_every_vector_and_random_frames_in_groups_of_1_to_7():
    rng = np.random.default_rng(11)
    vectors = _stream()
    randoms = _random_frames(rng, 40)
    for pool in (vectors, randoms, vectors + randoms):
        for group in range(1, 8):
            for first in range(0, len(pool), 3):
                frames = [pool[(first + j * 5) % len(pool)] for j in range(group)]
                for gap in (0, 3):  # also at odd offsets
                    buf, offsets, sizes = _layout(frames, gap)
                    crcs = P.crc32_batch(buf, offsets, sizes)
                    assert crcs.tolist() == [_crc_ref(f) for f in frames]
                    assert P.verify_batch(buf, offsets, sizes).all()


def test_crc_batch_mixed_lengths_every_payload_size():
    rng = np.random.default_rng(12)
    for group in range(1, 8):
        lengths = rng.permutation(np.arange(0, 300))
        frames = [_frame_of(rng, int(length)) for length in lengths]
        for k in range(0, len(frames), group):
            chunk = frames[k : k + group]
            buf, offsets, sizes = _layout(chunk)
            assert P.crc32_batch(buf, offsets, sizes).tolist() == [_crc_ref(f) for f in chunk]


def _frame_of(rng: np.random.Generator, payload_size: int) -> bytes:
    frame = bytearray(rng.integers(0, 256, 32 + payload_size, dtype=np.uint8).tobytes())
    frame[0:5] = P.MAGIC.to_bytes(4, "little") + bytes([P.PROTOCOL_VERSION])
    frame[24:28] = payload_size.to_bytes(4, "little")
    frame[28:32] = _crc_ref(bytes(frame)).to_bytes(4, "little")
    return bytes(frame)


def test_verify_batch_bad_crc_in_each_position_of_a_group():
    rng = np.random.default_rng(13)
    for group in range(1, 8):
        frames = _random_frames(rng, group, 90)
        buf, offsets, sizes = _layout(frames)
        for bad in range(group):
            for where in (0, 5, 28, 31, int(sizes[bad]) - 1):
                broken = bytearray(buf)
                broken[int(offsets[bad]) + where] ^= 0x10
                expected = [j != bad for j in range(group)]
                assert P.verify_batch(bytes(broken), offsets, sizes).tolist() == expected
                assert P.verify_batch(bytes(broken), offsets, sizes, parallel=True).tolist() == expected
                crcs = P.crc32_batch(bytes(broken), offsets, sizes).tolist()
                assert crcs[:bad] + crcs[bad + 1 :] == [_crc_ref(f) for j, f in enumerate(frames) if j != bad]


def test_verify_batch_parallel_matches_serial():
    rng = np.random.default_rng(14)
    frames = _random_frames(rng, 203, 60)
    buf, offsets, sizes = _layout(frames)
    broken = bytearray(buf)
    for k in rng.choice(len(frames), 20, replace=False):
        broken[int(offsets[k]) + 40 % int(sizes[k])] ^= 1
    serial = P.verify_batch(bytes(broken), offsets, sizes)
    assert not serial.all()
    assert np.array_equal(P.verify_batch(bytes(broken), offsets, sizes, parallel=True), serial)
    assert P.verify_batch(b"", np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)


def _scan_ref(buf: bytes, max_payload: int, final: bool, resyncing: bool):
    """The frame-at-a-time scan (CRC checked as each frame is found), in Python, as the kernel
    was before it verified runs of frames together: its results must not change."""
    magic = P.MAGIC.to_bytes(4, "little")
    n = len(buf)
    frames, errors, skipped, pos, need = [], [0] * 5, 0, 0, 32

    def find(start):
        i = buf.find(magic, start)
        if i >= 0:
            return i
        for i in range(max(start, n - 3), n):
            if magic.startswith(buf[i:]):
                return -(i + 1)
        return -(n + 1)

    while pos < n:
        if resyncing:
            found = find(pos)
            if found < 0:
                keep = n if final else -found - 1
                skipped += keep - pos
                pos = keep
                break
            skipped += found - pos
            pos = found
            resyncing = False
        avail = n - pos
        kind = -1
        if avail < 4:
            prefix = magic.startswith(buf[pos:])
            if not final and prefix:
                break
            kind = B.ERR_TRUNCATED if prefix else B.ERR_BAD_MAGIC
        elif buf[pos : pos + 4] != magic:
            kind = B.ERR_BAD_MAGIC
        elif avail < 32:
            if not final:
                break
            kind = B.ERR_TRUNCATED
        elif buf[pos + 4] != P.PROTOCOL_VERSION:
            kind = B.ERR_BAD_VERSION
        else:
            size = 32 + int.from_bytes(buf[pos + 24 : pos + 28], "little")
            if size - 32 > max_payload:
                kind = B.ERR_OVERSIZE
            elif avail < size:
                if not final:
                    need = size
                    break
                kind = B.ERR_TRUNCATED
            elif _crc_ref(buf[pos : pos + size]) != int.from_bytes(buf[pos + 28 : pos + 32], "little"):
                kind = B.ERR_BAD_CHECKSUM
            else:
                frames.append((pos, size))
                pos += size
                continue
        errors[kind] += 1
        skipped += 1
        pos += 1
        resyncing = True
    return frames, pos, need, errors, skipped, resyncing


def _check_scan(buf: bytes, max_payload: int = 200) -> None:
    for final in (False, True):
        for resyncing in (False, True):
            got = P.scan_frames(buf, 0, max_payload, final=final, resyncing=resyncing)
            frames, end, need, errors, skipped, resync = _scan_ref(buf, max_payload, final, resyncing)
            assert list(zip(got.offsets.tolist(), got.sizes.tolist(), strict=True)) == frames
            assert (got.end, got.need, got.errors.tolist(), got.skipped, got.resyncing) == (
                end,
                need,
                errors,
                skipped,
                resync,
            )


def test_scan_bad_crc_in_each_position_of_a_run():
    """A bad CRC anywhere in a run (runs are verified together, four frames at a time) is
    counted once, the frames before it kept, and the scan resumes inside it."""
    rng = np.random.default_rng(15)
    for count in (1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 65, 70):
        frames = _random_frames(rng, count, 80)
        buf, offsets, _ = _layout(frames)
        _check_scan(buf)
        for bad in sorted({0, 1, 2, 3, count // 2, count - 2, count - 1} & set(range(count))):
            broken = bytearray(buf)
            broken[int(offsets[bad]) + 29] ^= 0x01  # the stored checksum
            _check_scan(bytes(broken))
            result = P.scan_frames(bytes(broken))
            assert result.errors[B.ERR_BAD_CHECKSUM] == 1
            assert result.offsets.tolist() == [o for j, o in enumerate(offsets.tolist()) if j != bad]


def test_scan_many_bad_crcs_and_frames_nested_in_bad_ones():
    rng = np.random.default_rng(16)
    bad_checksums = 0
    for _ in range(60):
        frames = _random_frames(rng, int(rng.integers(1, 80)), int(rng.choice([0, 8, 40, 150])))
        pieces = []
        for frame in frames:
            frame = bytearray(frame)
            roll = rng.random()
            if roll < 0.3:  # bad CRC
                frame[int(rng.integers(0, len(frame)))] ^= 1 << int(rng.integers(0, 8))
            elif roll < 0.4 and len(frame) > 40:  # a good frame hidden in a bad frame's payload
                inner = _random_frames(rng, 1, 0)[0]
                frame = bytearray(bytes(frame) + inner)
                frame[24:28] = (len(frame) - 32).to_bytes(4, "little")
            elif roll < 0.45:  # garbage
                frame += rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
            pieces.append(bytes(frame))
        buf = b"".join(pieces)
        _check_scan(buf)
        bad_checksums += int(P.scan_frames(buf, 0, 200).errors[B.ERR_BAD_CHECKSUM])
        cut = int(rng.integers(0, len(buf) + 1))
        _check_scan(buf[:cut])  # ends mid-frame
        _check_scan(buf[cut:])  # starts mid-frame
    assert bad_checksums > 100  # the runs were really cut many times


def test_verify_batch_runs_on_past_every_failure():
    """Adjacent failures, one in every group, all frames bad: each verdict matches the
    frame-at-a-time reference (the batch check restarts after each failure it finds)."""
    rng = np.random.default_rng(15)
    frames = _random_frames(rng, 37, 70)
    buf, offsets, sizes = _layout(frames)
    for bad_set in ({0, 1, 2, 3, 4}, set(range(0, 37, 4)), set(range(37)), {36}, {35, 36}):
        broken = bytearray(buf)
        for k in bad_set:
            broken[int(offsets[k]) + 33 % int(sizes[k])] ^= 0x40
        expected = [
            _crc_ref(bytes(broken[int(o):int(o + s)])) == int.from_bytes(broken[int(o) + 28:int(o) + 32], "little")
            for o, s in zip(offsets, sizes, strict=True)
        ]
        assert expected == [k not in bad_set for k in range(37)]
        assert P.verify_batch(bytes(broken), offsets, sizes).tolist() == expected


def test_read_only_kernels_take_every_buffer_as_one_type():
    """bytes, bytearray, memoryview and numpy buffers reach the CRC kernels as one read-only array
    type, so numba compiles each kernel once (seconds each on a fresh install), not once per
    buffer kind the first time a node meets it."""
    frames = b"".join(_random_frames(np.random.default_rng(16), 6, 40))
    buffers = (frames, bytearray(frames), memoryview(bytearray(frames)), np.frombuffer(bytearray(frames), np.uint8))
    results = []
    for buf in buffers:
        found = P.scan_frames(buf, final=True)
        results.append((found.offsets.tolist(), P.verify_batch(buf, found.offsets, found.sizes).tolist()))
        decoder = P.FrameDecoder()
        decoder.receive_data(bytes(buf[:100]))
        decoder.receive_data(bytes(buf[100:]))  # two chunks: the decoder scans its own bytearray
        assert len(decoder.next_block()) == 6
    assert all(r == results[0] for r in results) and len(results[0][0]) == 6
    for kernel in (B._scan, B._verify_batch):  # _first_bad: compiled inside these two
        assert kernel.signatures and {sig[1].mutable for sig in kernel.signatures} == {False}, kernel


@numba.njit
def _loads_at(buf, at):  # pragma: no cover - jit
    return B._u16(buf, at), B._u32(buf, at), B._u64(buf, at)


def test_word_loads_read_little_endian_at_any_offset():
    """The kernels' word loads (one unaligned load each, see ``_load_codegen``) read what
    ``int.from_bytes`` reads at every byte offset, aligned or not, and from an unsigned index
    of any width (a uint8 index past 127 is not taken as negative)."""
    data = np.random.default_rng(17).integers(0, 256, 300, dtype=np.uint8)
    raw = data.tobytes()
    for at in [*range(0, 17), 129, 200, 255, 291]:
        want = tuple(int.from_bytes(raw[at:at + size], "little") for size in (2, 4, 8))
        assert _loads_at(data, at) == want, at
        if at < 256:
            assert _loads_at(data, np.uint8(at)) == want, at


def test_word_loads_refuse_a_strided_array():
    """The loads do plain pointer arithmetic, so a strided view fails to compile rather than
    reading the wrong bytes."""
    data = np.arange(64, dtype=np.uint8)
    with pytest.raises(numba.core.errors.TypingError):
        _loads_at(data[::2], 0)

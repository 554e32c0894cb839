"""Protocol throughput for 72-byte single-Trade messages: build, parse, CRC verify.

Run: ``python benchmarks/protocol.py [N]`` (or ``python -m benchmarks.protocol``). Every figure
is the best of several repeats after a JIT warm-up; the plain ``struct.unpack_from`` loop is
measured in the same run as the baseline the ratios refer to. The last line is one JSON object
of all figures.
"""

from __future__ import annotations

import pathlib
import struct
import sys
import zlib

import numpy as np

import alphapulse.protocol as P

if not __package__:  # run as a script: make the repo root importable for benchmarks._common
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks._common import best_rate, report


def main(n: int = 1_000_000, n_single: int = 200_000) -> dict[str, float | int | str]:
    rng = np.random.default_rng(7)
    cols = {
        "instrument_id": rng.integers(0, 2**63, n, dtype=np.uint64),
        "price": rng.integers(1, 10**13, n, dtype=np.int64),
        "quantity": rng.integers(1, 10**10, n, dtype=np.int64),
        "exchange_ts_ns": np.arange(n, dtype=np.uint64) + 1_700_000_000_000_000_000,
        "side": rng.integers(0, 3, n, dtype=np.uint8),
    }
    trades = [
        P.Trade(
            int(cols["instrument_id"][i]),
            int(cols["price"][i]),
            int(cols["quantity"][i]),
            int(cols["exchange_ts_ns"][i]),
            int(cols["side"][i]),
        )
        for i in range(n_single)
    ]

    # warm up every JIT path on a small batch
    small = {k: v[:1000] for k, v in cols.items()}
    warm = P.build_trade_batch(small, 1, 1, 1, 0)
    decoder = P.FrameDecoder()
    decoder.receive_data(warm)
    P.trade_columns(decoder.next_block())

    figures: dict[str, float | int | str] = {"messages": n, "message_size": P.TRADE_MESSAGE_SIZE}

    # -- build ------------------------------------------------------------------------------
    def build_single():
        builder = P.MessageBuilder(1, 1)
        build = builder.build
        for t in trades:
            build(t, 1_700_000_000_000_000_000)

    figures["build_single_msgs_per_s"] = best_rate(build_single, n_single, 3)
    data_holder: list[bytes] = []

    def build_batch():
        data_holder[:] = [P.build_trade_batch(cols, 1, 1, 1, 1_700_000_000_000_000_000)]

    figures["build_batch_msgs_per_s"] = best_rate(build_batch, n)
    data = data_holder[0]
    assert len(data) == 72 * n
    singles = [data[i * 72 : (i + 1) * 72] for i in range(n_single)]

    # -- baseline: plain struct.unpack_from loop over the same buffer -------------------------
    fmt = struct.Struct("<IBBHQQIIBBQqqQBB4x")

    def struct_loop():
        unpack = fmt.unpack_from
        for off in range(0, n_single * 72, 72):
            unpack(data, off)

    figures["struct_unpack_loop_msgs_per_s"] = base = best_rate(struct_loop, n_single, 3)

    # -- parse ------------------------------------------------------------------------------
    def parse_single():
        decode = P.decode_message
        for m in singles:
            decode(m)

    figures["parse_single_msgs_per_s"] = best_rate(parse_single, n_single, 3)

    def decode_blocks():
        dec = P.FrameDecoder()
        dec.receive_data(data)
        block = dec.next_block()
        assert len(block) == n
        return block

    figures["decoder_scan_crc_msgs_per_s"] = best_rate(decode_blocks, n)
    block = decode_blocks()

    def columns_view():
        view = P.trade_columns(block)
        return view["price"], view["quantity"], view["instrument_id"]

    figures["parse_batch_view_msgs_per_s"] = best_rate(columns_view, n)

    def columns_copy():
        view = P.trade_columns(block)
        return {
            k: np.ascontiguousarray(view[k]) for k in ("instrument_id", "price", "quantity", "exchange_ts_ns", "side")
        }

    figures["parse_batch_field_arrays_msgs_per_s"] = best_rate(columns_copy, n)

    # -- CRC verify -------------------------------------------------------------------------
    offsets, sizes = block.offsets, block.sizes

    def crc_numba():
        assert P.verify_batch(data, offsets, sizes).all()

    figures["crc_verify_numba_batch_msgs_per_s"] = best_rate(crc_numba, n)

    def crc_numba_parallel():
        assert P.verify_batch(data, offsets, sizes, parallel=True).all()

    crc_numba_parallel()  # warm the threading layer
    figures["crc_verify_numba_batch_parallel_msgs_per_s"] = best_rate(crc_numba_parallel, n)
    view = memoryview(data)
    zero4 = bytes(4)

    def crc_zlib():
        crc32 = zlib.crc32
        for off in range(0, n_single * 72, 72):
            crc32(view[off + 32 : off + 72], crc32(zero4, crc32(view[off : off + 28])))

    figures["crc_verify_zlib_per_msg_msgs_per_s"] = best_rate(crc_zlib, n_single, 3)

    # -- ratios against the struct loop ------------------------------------------------------
    for key in (
        "build_single",
        "build_batch",
        "parse_single",
        "parse_batch_view",
        "parse_batch_field_arrays",
        "decoder_scan_crc",
        "crc_verify_numba_batch",
        "crc_verify_numba_batch_parallel",
        "crc_verify_zlib_per_msg",
    ):
        figures[f"ratio_{key}_vs_struct"] = round(figures[f"{key}_msgs_per_s"] / base, 2)
    goals = {
        "parse_batch_field_arrays_msgs_per_s": 10e6,
        "crc_verify_numba_batch_msgs_per_s": 30e6,
        "crc_verify_numba_batch_parallel_msgs_per_s": 30e6,
        "build_single_msgs_per_s": 0.5e6,
        "build_batch_msgs_per_s": 5e6,
    }
    figures["goals_met"] = ",".join(
        f"{k.removesuffix('_msgs_per_s')}={'yes' if figures[k] >= g else 'NO'}" for k, g in goals.items()
    )
    for key, value in list(figures.items()):
        if isinstance(value, float) and key.endswith("_per_s"):
            figures[key] = round(value)
    return figures


if __name__ == "__main__":
    report(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))

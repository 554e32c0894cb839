"""Where a consumer left off, from what it stored (``runtime/_resume.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alphapulse import protocol
from alphapulse.runtime import frames_in_chunks, make_sequence, merge_positions, positions_in_frame_files, positions_of


def test_highest_sequence_per_source_in_any_order() -> None:
    sources = np.array([4, 3, 4, 3, 9], np.uint16)
    sequences = np.array([make_sequence(2, 12), make_sequence(7, 3), make_sequence(2, 5), make_sequence(7, 9),
                          make_sequence(1, 1)], np.uint64)
    assert positions_of(sources, sequences) == {3: make_sequence(7, 9), 4: make_sequence(2, 12), 9: make_sequence(1, 1)}
    assert positions_of(sources[:0], sequences[:0]) == {}
    merged = merge_positions({3: make_sequence(7, 20), 5: 8}, {3: make_sequence(7, 9), 5: 9})
    assert merged == {3: make_sequence(7, 20), 5: 9}
    later_epoch = {3: make_sequence(8, 1)}
    assert merge_positions({3: make_sequence(7, 20)}, later_epoch) == later_epoch


def test_frame_files_ignore_a_torn_last_frame(tmp_path: Path) -> None:
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, 3, make_sequence(7, 1))
    trade = protocol.Trade(instrument_id=1, price=1, quantity=1, exchange_ts_ns=0)
    whole = tmp_path / "a"
    whole.write_bytes(b"".join(builder.build(trade, 1) for _ in range(4)))
    torn = tmp_path / "b"
    torn.write_bytes(builder.build(trade, 1) + builder.build(trade, 1)[:33])
    (tmp_path / "empty").write_bytes(b"")
    found = positions_in_frame_files([whole, torn, tmp_path / "empty"])
    assert found == {3: make_sequence(7, 5)}


def test_the_positions_checkpoint_round_trips_and_a_bad_one_is_ignored(tmp_path, caplog) -> None:
    from alphapulse.runtime import read_positions, write_positions

    assert read_positions(tmp_path) == {}
    write_positions(tmp_path, {7: 2**63 + 5, 3: 1})
    assert read_positions(tmp_path) == {3: 1, 7: 2**63 + 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".positions.json"]  # the temporary file renamed away
    for bad in ("{not json", '{"positions": [1, 2]}', '{"version": 1}', '{"positions": {"x": 1}}'):
        (tmp_path / ".positions.json").write_text(bad)
        assert read_positions(tmp_path) == {}
    assert "ignoring" in caplog.text


def test_a_file_scanned_in_small_pieces_finds_what_one_whole_scan_finds(tmp_path: Path) -> None:
    """Pieces cut frames, garbage and a frame longer than a piece: every frame is found once, in
    bounded memory, and the positions are those of one scan of the whole file."""
    builders = [protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, s, make_sequence(4, 1)) for s in (1, 2)]
    small = protocol.Trade(instrument_id=1, price=1, quantity=1, exchange_ts_ns=0)
    frames = [builders[i % 2].build(small, i) for i in range(300)]
    frames.insert(120, b"\x00garbage" * 9)  # skipped, then the scan resynchronises
    frames.insert(200, builders[0].build([small] * 60, 7))  # 2.4 KB: longer than a piece
    data = b"".join(frames) + builders[1].build(small, 9)[:40]  # a torn frame at the end
    whole = protocol.scan_frames(np.frombuffer(data, np.uint8), final=True)
    expected_starts = whole.offsets.tolist()
    for piece_bytes in (100, 257, 1000, 1 << 20):
        starts = []
        for at, _, found in frames_in_chunks(np.frombuffer(data, np.uint8), piece_bytes):
            starts.extend(at + int(offset) for offset in found.offsets)
        assert starts == expected_starts, piece_bytes
    path = tmp_path / "rec"
    path.write_bytes(data)
    assert positions_in_frame_files([path]) == {1: make_sequence(4, 151), 2: make_sequence(4, 150)}

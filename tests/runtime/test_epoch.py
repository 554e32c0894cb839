"""Sequence epochs: ``make_sequence``/``split_sequence`` and which sources restarted
(``runtime.UpstreamEpochs``), on real frames."""

from __future__ import annotations

from alphapulse import protocol
from alphapulse.runtime import UpstreamEpochs, epoch_from_time, make_sequence, split_sequence

TRADE = protocol.Trade(instrument_id=1, price=1, quantity=1, exchange_ts_ns=0)


def frames(source: int, epoch: int, first: int, count: int = 1) -> bytes:
    builder = protocol.MessageBuilder(protocol.RelayDomain.MARKET_DATA, source, make_sequence(epoch, first))
    return b"".join(builder.build(TRADE, 1) for _ in range(count))


def test_sequence_halves_and_time_epochs() -> None:
    assert split_sequence(make_sequence(7, 123)) == (7, 123)
    assert 0 < epoch_from_time(0) != epoch_from_time(200_000_000)


def test_restarts_are_told_once_per_new_epoch_in_one_source_runs_and_mixed_blocks() -> None:
    epochs = UpstreamEpochs()
    run = protocol.FrameBlock.from_bytes(frames(3, 0, 1, 4))  # epoch 0: a builder given none
    assert epochs.restarted(run) == []  # first sight is no restart
    assert epochs.restarted(protocol.FrameBlock.from_bytes(frames(3, 0, 5, 2))) == []
    assert epochs.restarted(protocol.FrameBlock.from_bytes(frames(3, 1, 40))) == [3]
    assert epochs.restarted(protocol.FrameBlock.from_bytes(frames(3, 1, 41))) == []
    # several sources in one block (the numpy path): a new source, a restarted one, an unchanged one
    mixed = protocol.FrameBlock.from_bytes(frames(9, 4, 1) + frames(3, 2, 7) + frames(3, 2, 8) + frames(9, 4, 2))
    assert mixed.sequence_run is None
    assert epochs.restarted(mixed) == [3]
    again = protocol.FrameBlock.from_bytes(frames(9, 5, 1) + frames(3, 6, 1) + frames(3, 2, 9))
    assert epochs.restarted(again) == [9, 3]  # each restarted source once, in the order first seen

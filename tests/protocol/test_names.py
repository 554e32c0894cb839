"""Instrument ids (pinned golden values) and exact fixed-point parsing."""

from __future__ import annotations

import pytest

import alphapulse.protocol as P

GOLDEN_IDS = {
    "coinbase:BTC-USD": ("spot|coinbase|BTC|USD", 0x0E28C5F7C823937F),
    "kraken:ETH-USDT": ("spot|kraken|ETH|USDT", 0x9E5B24038612F33B),
    "stock:alpaca:AAPL": ("stock|alpaca|AAPL", 0x106ABCEAC0C57706),
    "option:deribit:BTC:20250627:65000:C": ("option|deribit|BTC|20250627|65000|C", 0x9DC28501276665A5),
    "option:cboe:SPY:20250117:612.5:P": ("option|cboe|SPY|20250117|612.5|P", 0x9281B74190E2D02B),
    "pool:polygon:0x45dda9cb7c25131df268515131f647d726f50608": (
        "pool|polygon|0x45dda9cb7c25131df268515131f647d726f50608",
        0x548BDF41FFD50200,
    ),
}


@pytest.mark.parametrize("short", sorted(GOLDEN_IDS))
def test_instrument_ids_are_pinned(short):
    canonical, iid = GOLDEN_IDS[short]
    instrument = P.parse_instrument(short)
    assert instrument.canonical == canonical
    assert instrument.id == iid == P.instrument_id(canonical)
    assert instrument.short == short
    assert P.parse_instrument(canonical) == instrument
    mapping = P.mapping_for(instrument)
    assert P.decode_payload(P.encode(mapping)) == [mapping]
    assert P.parse_instrument(mapping.canonical).id == mapping.instrument_id


def test_constructors_normalise():
    assert P.spot("Coinbase", "btc", "usd") == P.parse_instrument("coinbase:BTC/USD")
    assert (
        P.option("deribit", "BTC", "20250627", "65000.00", "c").id
        == GOLDEN_IDS["option:deribit:BTC:20250627:65000:C"][1]
    )
    assert P.pool("polygon", "0x45DDA9CB7C25131DF268515131F647D726F50608").id == 0x548BDF41FFD50200
    with pytest.raises(P.InstrumentError):
        P.option("deribit", "BTC", "20250627", 65000.5, "C")
    with pytest.raises(P.InstrumentError):
        P.parse_instrument("nonsense")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("65000.12345678", 6_500_012_345_678),
        ("-0.00000001", -1),
        ("1e-8", 1),
        ("0", 0),
        ("+12.5", 1_250_000_000),
        ("0.100000000000", 10_000_000),
        (".5", 50_000_000),
        ("92233720368.54775807", 2**63 - 1),
        ("-92233720368.54775808", -(2**63)),
    ],
)
def test_parse_fixed(text, value):
    assert P.parse_fixed(text) == value
    assert P.parse_fixed(P.format_fixed(value)) == value


@pytest.mark.parametrize("text", ["0.000000001", "1e-9", "", "abc", "1.2.3", "92233720368.54775808", "--1", "."])
def test_parse_fixed_refuses(text):
    with pytest.raises(P.FixedPointError):
        P.parse_fixed(text)


def test_format_fixed():
    assert P.format_fixed(6_500_012_345_678) == "65000.12345678"
    assert P.format_fixed(-1) == "-0.00000001"
    assert P.format_fixed(100_000_000) == "1"

"""The public surface, the generated docs, and the no-I/O rule."""

from __future__ import annotations

import ast
import pathlib

import alphapulse.protocol as P
from alphapulse.protocol import docs

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "alphapulse" / "protocol"


def test_all_is_sorted_and_complete():
    assert P.__all__ == sorted(P.__all__, key=lambda n: (not n.isupper(), n))
    for name in P.__all__:
        assert hasattr(P, name), name
    for layout in P.LAYOUTS.values():
        assert getattr(P, layout.name) is layout.record


def test_docs_are_generated_from_the_table():
    committed = (ROOT / "docs" / "protocol.md").read_text()
    assert committed == docs.render(), "run: python -m alphapulse.protocol.docs > docs/protocol.md"


def test_protocol_does_no_io():
    """Sans-IO: no sockets, trio, clocks, threads or files inside alphapulse.protocol."""
    banned = {"socket", "trio", "time", "asyncio", "threading", "selectors", "os", "io", "datetime"}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
        assert "open(" not in path.read_text(), path.name


def test_records_are_frozen_and_typed():
    import dataclasses

    import pytest

    trade = P.Trade(1, 2, 3, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trade.price = 5
    assert P.Trade.TLV_TYPE is P.TLVType.TRADE
    assert hash(trade) == hash(P.decode_payload(P.encode(trade))[0])
    unknown = P.decode_payload(P.encode_tlv(120, b"abc"))
    assert unknown == [P.UnknownTLV(120, b"abc")]
    assert P.encode(unknown[0]) == P.encode_tlv(120, b"abc")


def test_truncated_tlv_is_malformed():
    import pytest

    raw = P.encode(P.Trade(1, 2, 3, 4))
    for cut in range(1, len(raw)):
        with pytest.raises(P.MalformedFrame):
            P.decode_payload(raw[:cut])
    with pytest.raises(P.MalformedFrame):
        P.decode(P.TLVType.TRADE, raw[2:-1])
    assert issubclass(P.MalformedFrame, P.RemoteProtocolError)
    assert not issubclass(P.LocalProtocolError, P.RemoteProtocolError)

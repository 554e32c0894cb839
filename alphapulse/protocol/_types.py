"""TLV type numbers, their domains, and relay domains.

Type numbers follow the V2 architecture guide's registry (market data 1-19, signals 20-39,
execution 40-79, system 80-99, reserved 100-254, 255 marks the extended TLV format). Types the
guide does not number (book delta, bars, raw EVM logs, the recovery control messages) take the
next free number in their domain. A number, once published, never changes meaning.
"""

from __future__ import annotations

import enum

EXTENDED_TLV_MARKER = 255


class TLVDomain(enum.IntEnum):
    """The range of type numbers a TLV belongs to."""

    MARKET_DATA = 1
    SIGNAL = 2
    EXECUTION = 3
    SYSTEM = 4


class RelayDomain(enum.IntEnum):
    """The header's relay_domain byte: which relay family a message is routed through."""

    MARKET_DATA = 1
    SIGNAL = 2
    EXECUTION = 3
    SYSTEM = 4


_DOMAIN_RANGES: tuple[tuple[range, TLVDomain], ...] = (
    (range(1, 20), TLVDomain.MARKET_DATA),
    (range(20, 40), TLVDomain.SIGNAL),
    (range(40, 80), TLVDomain.EXECUTION),
    (range(80, 100), TLVDomain.SYSTEM),
)


class TLVType(enum.IntEnum):
    """Every TLV type this protocol version defines."""

    # market data (1-19)
    TRADE = 1
    QUOTE = 2
    ORDER_BOOK = 3
    POOL_SWAP = 4
    POOL_MINT = 5
    POOL_BURN = 6
    ORDER_BOOK_DELTA = 7
    BAR = 8
    EVM_LOG = 9
    POOL_EVENT_RETRACTION = 10
    POOL_SYNC = 11
    # signals (20-39)
    SIGNAL_IDENTITY = 20
    ARBITRAGE_SIGNAL = 21
    MOMENTUM_SIGNAL = 22
    LIQUIDATION_ALERT = 23
    # execution (40-79)
    ORDER_REQUEST = 40
    ORDER_ACK = 41
    FILL = 42
    CANCEL = 43
    GAS_PRICE = 44
    # system (80-99)
    HEARTBEAT = 80
    STATUS_REPORT = 81
    INSTRUMENT_MAPPING = 82
    SUBSCRIBE = 83
    RESEND_REQUEST = 84
    RESEND_UNAVAILABLE = 85
    SNAPSHOT_REQUEST = 86
    SNAPSHOT_COMPLETE = 87
    PEER_INTRODUCTION = 88
    SEQUENCE_HEAD = 89

    @property
    def domain(self) -> TLVDomain:
        return tlv_domain(self)

    @property
    def title(self) -> str:
        """CamelCase name used in topology files and docs, e.g. ``OrderBookDelta``."""
        return "".join(part.capitalize() for part in self.name.split("_"))

    @classmethod
    def from_title(cls, title: str) -> TLVType:
        """Look a type up by its CamelCase name; raises KeyError when unknown."""
        for member in cls:
            if member.title == title:
                return member
        raise KeyError(title)


def tlv_domain(type_number: int) -> TLVDomain:
    """The domain of a TLV type number; raises ValueError for reserved numbers."""
    for numbers, domain in _DOMAIN_RANGES:
        if type_number in numbers:
            return domain
    raise ValueError(f"TLV type {type_number} is in no domain (reserved or extended marker)")


def relay_domain_for(tlv: TLVType) -> RelayDomain:
    """The relay domain a TLV type travels through by default."""
    return RelayDomain(tlv_domain(tlv).value)

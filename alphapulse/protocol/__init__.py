"""The AlphaPulse wire protocol V2, sans-IO: bytes in, messages and arrays out.

Nothing in this package touches sockets, clocks or files; callers pass time in.
"""

from alphapulse.protocol._fixed import (
    PRICE_DECIMALS,
    PRICE_SCALE,
    FixedPointError,
    format_fixed,
    parse_fixed,
    to_decimal,
    to_float,
)
from alphapulse.protocol._instrument import (
    Instrument,
    InstrumentError,
    instrument_id,
    option,
    parse_instrument,
    pool,
    spot,
    stock,
)
from alphapulse.protocol._types import (
    EXTENDED_TLV_MARKER,
    RelayDomain,
    TLVDomain,
    TLVType,
    relay_domain_for,
    tlv_domain,
)

__all__ = [
    "EXTENDED_TLV_MARKER",
    "PRICE_DECIMALS",
    "PRICE_SCALE",
    "FixedPointError",
    "Instrument",
    "InstrumentError",
    "RelayDomain",
    "TLVDomain",
    "TLVType",
    "format_fixed",
    "instrument_id",
    "option",
    "parse_fixed",
    "parse_instrument",
    "pool",
    "relay_domain_for",
    "spot",
    "stock",
    "to_decimal",
    "to_float",
    "tlv_domain",
]

"""Deterministic 64-bit instrument ids from symbol descriptors.

An id is the first 8 bytes (little-endian) of BLAKE2b over the descriptor's canonical text, so
it is the same on every run, process, machine and Python version (never ``hash()``). The
canonical text is also what InstrumentMapping carries, so a consumer can print names and
recompute the id to check it.

Canonical forms (fields separated by ``|``)::

    spot|<exchange>|<BASE>|<QUOTE>
    stock|<exchange>|<TICKER>
    option|<exchange>|<UNDERLYING>|<YYYYMMDD>|<strike>|<C or P>
    pool|<chain>|<0xaddress lowercase>

Exchange and chain names are lower case, asset symbols upper case, and the strike is an exact
decimal with no trailing zeros (``600``, ``612.5``). The short text form used in topology files
and the CLI is the same with ``:`` instead of ``|`` and ``BASE-QUOTE`` for spot pairs:
``coinbase:BTC-USD``, ``stock:alpaca:AAPL``, ``pool:polygon:0x45dd…``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from decimal import Decimal, InvalidOperation
from typing import Literal

InstrumentKind = Literal["spot", "stock", "option", "pool"]

_NAME = re.compile(r"^[a-z0-9_.]+$")
_SYMBOL = re.compile(r"^[A-Z0-9_.]+$")
_ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")
_EXPIRY = re.compile(r"^\d{8}$")


class InstrumentError(ValueError):
    """A descriptor that cannot name an instrument."""


@dataclasses.dataclass(frozen=True)
class Instrument:
    """A symbol descriptor, built by :func:`spot`, :func:`stock`, :func:`option`, :func:`pool`."""

    kind: InstrumentKind
    venue: str
    """Exchange for spot/stock/option, chain for pools."""
    symbol: tuple[str, ...]
    """spot: (BASE, QUOTE); stock: (TICKER,); option: (UNDERLYING, YYYYMMDD, strike, C|P);
    pool: (address,)."""

    @property
    def canonical(self) -> str:
        return "|".join((self.kind, self.venue, *self.symbol))

    @property
    def id(self) -> int:
        return instrument_id(self.canonical)

    @property
    def name(self) -> str:
        """Display name: ``BTC-USD`` for spot, the ticker, the option code or the pool address."""
        if self.kind == "spot":
            return f"{self.symbol[0]}-{self.symbol[1]}"
        if self.kind == "option":
            return "{}-{}-{}-{}".format(*self.symbol)
        return self.symbol[0]

    @property
    def short(self) -> str:
        """The short text form used in topology files (see module docstring)."""
        if self.kind == "spot":
            return f"{self.venue}:{self.name}"
        return ":".join((self.kind, self.venue, *self.symbol))

    @property
    def base(self) -> str | None:
        return self.symbol[0] if self.kind == "spot" else None

    @property
    def quote(self) -> str | None:
        return self.symbol[1] if self.kind == "spot" else None


def instrument_id(canonical: str) -> int:
    """The 64-bit id of a canonical descriptor text."""
    digest = hashlib.blake2b(canonical.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _venue(value: str, what: str) -> str:
    venue = value.strip().lower()
    if not _NAME.match(venue):
        raise InstrumentError(f"{what} {value!r} must be letters, digits, '_' or '.'")
    return venue


def _symbol(value: str, what: str) -> str:
    symbol = value.strip().upper()
    if not _SYMBOL.match(symbol):
        raise InstrumentError(f"{what} {value!r} must be letters, digits, '_' or '.'")
    return symbol


def spot(exchange: str, base: str, quote: str) -> Instrument:
    return Instrument("spot", _venue(exchange, "exchange"), (_symbol(base, "base"), _symbol(quote, "quote")))


def stock(exchange: str, ticker: str) -> Instrument:
    return Instrument("stock", _venue(exchange, "exchange"), (_symbol(ticker, "ticker"),))


def option(exchange: str, underlying: str, expiry: int | str, strike: str | int | Decimal, right: str) -> Instrument:
    """An option; ``strike`` is exact (pass a string or Decimal, not a float)."""
    expiry_text = str(expiry)
    if not _EXPIRY.match(expiry_text):
        raise InstrumentError(f"expiry {expiry!r} must be YYYYMMDD")
    if isinstance(strike, float):
        raise InstrumentError("strike must be exact: pass a string or Decimal, not a float")
    try:
        value = Decimal(str(strike))
    except InvalidOperation:
        raise InstrumentError(f"strike {strike!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise InstrumentError(f"strike {strike!r} must be a positive number")
    strike_text = format(value.normalize(), "f")
    right_text = str(right).upper()
    if right_text not in ("C", "P"):
        raise InstrumentError(f"option right {right!r} must be 'C' or 'P'")
    return Instrument(
        "option",
        _venue(exchange, "exchange"),
        (_symbol(underlying, "underlying"), expiry_text, strike_text, right_text),
    )


def pool(chain: str, address: str) -> Instrument:
    addr = address.strip().lower()
    if not _ADDRESS.match(addr):
        raise InstrumentError(f"pool address {address!r} must be 0x followed by 40 hex digits")
    return Instrument("pool", _venue(chain, "chain"), (addr,))


def parse_instrument(text: str) -> Instrument:
    """Parse a short form (``coinbase:BTC-USD``, ``stock:alpaca:AAPL``, ...) or a canonical text."""
    parts = text.split("|") if "|" in text else text.split(":")
    head = parts[0].strip().lower()
    if head == "spot" and len(parts) == 4:
        return spot(parts[1], parts[2], parts[3])
    if head == "stock" and len(parts) == 3:
        return stock(parts[1], parts[2])
    if head == "option" and len(parts) == 6:
        return option(parts[1], parts[2], parts[3], parts[4], parts[5])
    if head == "pool" and len(parts) == 3:
        return pool(parts[1], parts[2])
    if len(parts) == 2:
        base, sep, quote = parts[1].replace("/", "-").partition("-")
        if sep:
            return spot(parts[0], base, quote)
    raise InstrumentError(
        f"cannot read instrument {text!r}: use 'exchange:BASE-QUOTE', 'stock:exchange:TICKER', "
        "'option:exchange:UNDERLYING:YYYYMMDD:STRIKE:C|P' or 'pool:chain:0xADDRESS'"
    )

"""Fixed-point numbers: exchange decimal strings to scaled integers, exactly.

Prices and quantities travel as signed 64-bit integers scaled by 10**8 (``PRICE_SCALE``), the
precision every centralised venue we speak uses. Parsing never goes through a float: the digits
are read as text, so ``"65000.12345678"`` becomes ``6500012345678`` exactly. Digits beyond the
eighth decimal must be zeros; anything else would be a silent rounding and is refused.

DEX amounts do not fit this scale; they travel as raw uint256 integers plus the token's decimals
(see the PoolSwap layout).
"""

from __future__ import annotations

from decimal import Decimal

PRICE_DECIMALS = 8
PRICE_SCALE = 10**PRICE_DECIMALS
_I64_MAX = 2**63 - 1


class FixedPointError(ValueError):
    """A decimal text that cannot be represented exactly at the fixed-point scale."""


def parse_fixed(text: str | bytes, decimals: int = PRICE_DECIMALS) -> int:
    """Parse a decimal string (``"-12.5"``, ``"0.00000001"``, ``"1e-8"``) into a scaled integer."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    s = text.strip()
    if not s:
        raise FixedPointError("empty number")
    if "e" in s or "E" in s:
        try:
            value = Decimal(s)
        except ArithmeticError:
            raise FixedPointError(f"not a decimal number: {text!r}") from None
        scaled = value.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise FixedPointError(f"{text!r} has more than {decimals} decimals")
        return _check_range(int(scaled), text)
    negative = s.startswith("-")
    if s[0] in "+-":
        s = s[1:]
    whole, _, frac = s.partition(".")
    if not (whole or frac) or not (whole.isdigit() or whole == "") or not (frac.isdigit() or frac == ""):
        raise FixedPointError(f"not a decimal number: {text!r}")
    if len(frac) > decimals:
        if frac[decimals:].strip("0"):
            raise FixedPointError(f"{text!r} has more than {decimals} decimals")
        frac = frac[:decimals]
    value = int(whole or "0") * 10**decimals + int(frac.ljust(decimals, "0") or "0")
    return _check_range(-value if negative else value, text)


def _check_range(value: int, text: str) -> int:
    if not -_I64_MAX - 1 <= value <= _I64_MAX:
        raise FixedPointError(f"{text!r} does not fit a signed 64-bit fixed-point number")
    return value


def format_fixed(value: int, decimals: int = PRICE_DECIMALS) -> str:
    """The exact decimal text of a scaled integer, without trailing zeros (``"65000.12"``)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    frac_text = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"


def to_decimal(value: int, decimals: int = PRICE_DECIMALS) -> Decimal:
    return Decimal(value).scaleb(-decimals)


def to_float(value: int, decimals: int = PRICE_DECIMALS) -> float:
    return value / 10**decimals

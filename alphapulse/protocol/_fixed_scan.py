"""Fixed point read straight from JSON bytes, for the exchange kinds' numba scanners.

Venues quote prices and sizes as decimal strings (``"65000.12"``). A scanner that walks a frame's
bytes in numba reads them here without making a ``str`` per number, under the rules of
:func:`~alphapulse.protocol.parse_fixed`: plain digits with at most one dot, exact at 10**8,
anything else refused (the kind's generic path then parses the frame and names the problem).
"""

from __future__ import annotations

import numpy as np
from numba import njit

POWERS_OF_TEN = np.array([10**k for k in range(19)], dtype=np.int64)
I64_MAX = 2**63 - 1


@njit(cache=True, inline="always")
def quoted_decimal(buf, i: int, n: int):  # pragma: no cover - jit
    """A quoted decimal at ``buf[i] == '"'``: (mantissa, decimals, index after the closing
    quote); decimals -1 when it is not plain digits with at most one dot, or over 18 digits."""
    if i >= n or buf[i] != 34:
        return 0, -1, i
    i += 1
    mantissa = 0
    digits = 0
    decimals = -1
    while i < n:
        c = buf[i]
        if 48 <= c <= 57:
            mantissa = mantissa * 10 + (c - 48)
            digits += 1
            if decimals >= 0:
                decimals += 1
        elif c == 46 and decimals < 0:
            decimals = 0
        elif c == 34:
            break
        else:
            return 0, -1, i
        i += 1
    if i >= n or digits == 0 or digits > 18:
        return 0, -1, i
    return mantissa, max(decimals, 0), i + 1


@njit(cache=True, inline="always")
def scaled_e8(mantissa: int, decimals: int) -> int:  # pragma: no cover - jit
    """``mantissa`` x 10^-``decimals`` (``decimals`` >= 0) at the 10**8 scale; -1 when that is
    not exact or does not fit in 63 bits."""
    if decimals <= 8:
        if mantissa > I64_MAX // POWERS_OF_TEN[8 - decimals]:
            return -1
        return mantissa * POWERS_OF_TEN[8 - decimals]
    div = POWERS_OF_TEN[decimals - 8]
    if mantissa % div:
        return -1
    return mantissa // div


@njit(cache=True, inline="always")
def bytes_equal(buf, start: int, end: int, word) -> bool:  # pragma: no cover - jit
    """Whether ``buf[start:end]`` is ``word`` (a uint8 array): a JSON key or value compared in place."""
    if end - start != word.shape[0]:
        return False
    for k in range(word.shape[0]):  # noqa: SIM110 - numba compiles loops, not all(genexpr)
        if buf[start + k] != word[k]:
            return False
    return True

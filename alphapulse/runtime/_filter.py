"""Subscription filters: which frames of a block a subscriber asked for, decided in one kernel.

A filter selects by the message's first TLV type and by its first instrument id (every
instrument-scoped TLV starts with its instrument id). System-domain messages (types 80-99:
heartbeats, instrument mappings, recovery control) always pass, so a filtered consumer can
still name instruments and recover gaps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numba
import numpy as np

SYSTEM_FIRST, SYSTEM_LAST = 80, 99


@numba.njit(cache=True, nogil=True)
def _filter_mask(types, instruments, type_allowed, wanted_instruments, out):  # pragma: no cover - jit
    n_wanted = wanted_instruments.shape[0]
    for i in range(types.shape[0]):
        t = types[i]
        if 80 <= t <= 99:
            out[i] = True
            continue
        if not type_allowed[t]:
            out[i] = False
            continue
        if n_wanted == 0:
            out[i] = True
            continue
        j = np.searchsorted(wanted_instruments, instruments[i])
        out[i] = j < n_wanted and wanted_instruments[j] == instruments[i]
    return out


@dataclasses.dataclass(frozen=True)
class Subscription:
    """What one subscriber asked for; empty means everything."""

    types: frozenset[int] = frozenset()
    instruments: frozenset[int] = frozenset()

    @property
    def is_everything(self) -> bool:
        return not self.types and not self.instruments

    def compile(self) -> CompiledFilter:
        allowed = np.zeros(256, np.bool_)
        if self.types:
            allowed[list(self.types)] = True
        else:
            allowed[:] = True
        wanted = np.array(sorted(self.instruments), dtype=np.uint64)
        return CompiledFilter(self, allowed, wanted)


@dataclasses.dataclass(frozen=True)
class CompiledFilter:
    subscription: Subscription
    type_allowed: np.ndarray
    wanted_instruments: np.ndarray

    def mask(self, types: np.ndarray, instruments: np.ndarray) -> np.ndarray:
        return _filter_mask(
            types, instruments, self.type_allowed, self.wanted_instruments, np.empty(types.shape[0], np.bool_)
        )

    def keeps(self, tlv_type: int, instrument_id: int) -> bool:
        """:meth:`mask` of one message, in Python: for one frame a kernel call costs more."""
        if SYSTEM_FIRST <= tlv_type <= SYSTEM_LAST:
            return True
        wanted = self.subscription
        if wanted.types and tlv_type not in wanted.types:
            return False
        return not wanted.instruments or instrument_id in wanted.instruments


def subscription(types: Iterable[int] = (), instruments: Iterable[int] = ()) -> Subscription:
    return Subscription(frozenset(int(t) for t in types), frozenset(int(i) for i in instruments))

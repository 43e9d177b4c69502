"""The tie rule every part of pdasgd shares: when two instants are the same instant.

A read at the same instant as an update sees the update (docs/design.md, staleness). Float times computed
along different paths (SimPy's running clock, the fast path's offsets, the closed forms) land a few ulps
apart where the exact schedule has a tie, so instants closer than `TIE_FRACTION` of a reference duration
(the time of one sequential batch: forward, backward and updates of every layer) are the same instant, and
a ratio within `TIE_FRACTION` of an integer is that integer.
"""

from __future__ import annotations

import math

TIE_FRACTION = 1e-9


def tie_s(reference_s: float) -> float:
    """Instants closer than this are the same instant, for schedules whose sequential batch takes
    `reference_s`."""
    return TIE_FRACTION * reference_s


def ceil(x: float) -> int:
    """ceil that treats values within float noise of an integer as that integer."""
    return math.ceil(x - TIE_FRACTION * max(1.0, abs(x)))

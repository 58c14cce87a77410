"""One way to write a number into a report table (markdown, HTML, model cards)."""

from __future__ import annotations

import math
import numbers

MISSING = "–"


def fmt(v, digits: int = 3, general: bool = False) -> str:
    """None and NaN as a dash; reals to DIGITS decimals (DIGITS significant digits when GENERAL); integers,
    booleans and anything else as str()."""
    if v is None:
        return MISSING
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)):
        return MISSING if math.isnan(v) else f"{float(v):.{digits}{'g' if general else 'f'}}"
    return str(v)

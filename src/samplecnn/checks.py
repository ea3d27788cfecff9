"""The one check of a number given by a user (CLI flag, service query, Python call):
finite, bounded, of the right kind, else a one-line ValueError naming it.

Stdlib only, and imported by the lowest layers (`windows`, `options`): `samplecnn.options`
re-exports these names, where callers usually import them from.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["MAX_HOP_S", "check_float", "check_int"]

# Longer than any hop anyone means; a bound keeps `hop * sample_rate` far from overflow.
MAX_HOP_S = 3600.0


def check_float(value, name: str, *, low: float | None = None, high: float | None = None,
                low_inclusive: bool = False) -> float:
    """`value` as a finite float in (low, high] (`[low, high]` with `low_inclusive`), else a
    one-line ValueError naming `name`. Strings and bools are refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'at least' if low_inclusive else 'more than'} {low:g}, got {value!r}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be at most {high:g}, got {value!r}")
    return v


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int in [low, high], else a one-line ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be at least {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be at most {high}, got {v}")
    return v

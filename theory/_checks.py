"""Argument checks shared by the theory modules: one clear ValueError per bad argument."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence


def count(name: str, value: int, minimum: int = 1) -> int:
    """Return `value` as an int, or raise if it is not an integer >= minimum."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def duration(name: str, value: float, positive: bool = False) -> float:
    """Return `value` as a float, or raise if it is NaN, infinite, negative (or zero if positive)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound}, got {number}")
    return number


def durations(name: str, values: Sequence[float], positive: bool = False) -> list[float]:
    """Check a non-empty list of durations (one per layer)."""
    if isinstance(values, str | bytes) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of durations")
    return [duration(f"{name}[{i}]", v, positive) for i, v in enumerate(values)]


def optional_count(name: str, value: int | None) -> int | None:
    """None (unbounded) or an integer >= 1."""
    return None if value is None else count(name, value)


def flag(name: str, value: bool) -> bool:
    """Return `value`, or raise if it is not True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value

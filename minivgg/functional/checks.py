"""Argument checks shared by the functional ops and the nn layers that call them.

Each raises ValueError with a message that starts with the op or layer name (`op`), names
the argument and shows the value given. A layer calls the same check when it is built, so
that a bad argument fails there and not at its first forward.
"""
from __future__ import annotations

import numbers


def positive_int(value, name: str, op: str) -> int:
    """An int > 0 (not a bool), as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)


def number(value, name: str, op: str) -> None:
    """A real number (not a bool)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"{op}: {name} must be a number, got {value!r}")


def probability(value, name: str, op: str) -> float:
    """A real number in [0, 1] (not a bool), as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{op}: {name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def one_of(value, choices: tuple, name: str, op: str):
    """One of `choices` (e.g. GELU's approximate: 'none' or 'tanh')."""
    if value not in choices:
        names = " or ".join(repr(choice) for choice in choices)
        raise ValueError(f"{op}: {name} must be {names}, got {value!r}")
    return value

"""Argument checks shared by every module: one place, one rule for the exception type.

The rule: a value of the wrong *type* (a string where a number belongs, a float where an integer
belongs, a bool where a number belongs) raises ``TypeError``; a value of the right type that breaks
a rule (out of range, not one of the choices) raises ``ValueError``. Every message names the
argument, states the rule and shows what was received, e.g.
``iters must be an integer >= 1; got 0`` or ``tau must be a number; got 'abc' (str)``.

NumPy scalars count as numbers (``np.int64(3)`` is an integer); ``bool`` never does, although it
subclasses ``int`` in Python, since ``num_slots=True`` is always a mistake.

This module imports nothing from probslot: every layer may use it.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import TypeVar

__all__ = [
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_iteration",
    "check_positive_int",
    "check_tau",
    "is_int",
]

T = TypeVar("T")


def is_int(value: object) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _got(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_int(
    name: str, value: object, *, low: int | None = None, high: int | None = None, hint: str = ""
) -> int:
    """`value` as an int in [low, high] (None leaves a side open).

    Raises:
        TypeError: `value` is not an integer (bools and floats are not).
        ValueError: it lies outside the range.
    """
    rule = _range_text(low, high, False, False)
    what = f"an integer {rule}".rstrip()
    suffix = f". {hint}" if hint else ""
    if not is_int(value):
        raise TypeError(f"{name} must be {what}; got {_got(value)}{suffix}")
    number = int(value)  # type: ignore[call-overload]
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be {what}; got {number}{suffix}")
    return number


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """`value` as an int ≥ `minimum` (see `check_int`)."""
    return check_int(name, value, low=minimum)


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """`value` as a float in the range [low, high]; `low_open` / `high_open` exclude that end and
    None leaves that side open. NaN never lies in a range.

    Raises:
        TypeError: `value` is not a real number (bools and strings are not).
        ValueError: it lies outside the range (or is NaN while a range is set).
    """
    rule = _range_text(low, high, low_open, high_open)
    what = f"a number {rule}".rstrip()
    suffix = f" ({hint})" if hint else ""
    if not _is_real(value):
        raise TypeError(f"{name} must be {what}{suffix}; got {_got(value)}")
    number = float(value)  # type: ignore[arg-type]
    ok = True
    if low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise ValueError(f"{name} must be {what}{suffix}; got {number:g}")
    return number


def check_bool(name: str, value: object) -> bool:
    """`value` if it is a bool (True/False), else a TypeError: 0/1 and "yes" are not flags."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {_got(value)}")
    return value


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """`value` if it is one of `choices`, else a ValueError naming the closest choice."""
    options = list(choices)
    if value in options:
        return value
    from difflib import get_close_matches

    hint = ""
    if isinstance(value, str):
        close = get_close_matches(value, [str(c) for c in options], n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name} must be one of {options}; got {value!r}.{hint}")


def check_iteration(name: str, value: object, iters: int) -> int:
    """`value` as an EM iteration number in [1, iters] (see `check_int`)."""
    return check_int(name, value, low=1, high=iters, hint=f"EM runs iters={iters} iterations")


def check_tau(tau: object, name: str = "tau") -> float:
    """A relevance threshold τ ∈ [0, 1) (paper Eq. 7: keep slots with π > τ) as a float."""
    return check_float(
        name, tau, low=0.0, high=1.0, high_open=True, hint="paper Eq. 7 keeps slots with pi > tau"
    )

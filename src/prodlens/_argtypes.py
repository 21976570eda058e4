"""Value checkers for the ``prodlens`` command's options (argparse ``type=`` callables).

Shared by every sub-command so that a bad value is refused in the same words everywhere:
argparse turns the :class:`argparse.ArgumentTypeError` into ``error: argument --x: ...``.
"""

from __future__ import annotations

import argparse

__all__ = ["fraction", "number", "positive_count", "positive_number"]


def number(text: str) -> float:
    """Any number, e.g. ``--factor 5``."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None


def fraction(text: str) -> float:
    """A number strictly between 0 and 1, e.g. ``--alpha 0.01``."""
    value = number(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number between 0 and 1")
    return value


def positive_number(text: str) -> float:
    """A number above 0, e.g. ``--min-lift 2``."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def positive_count(text: str) -> int:
    """A whole number of at least 1, e.g. ``--min-units 20``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 1")
    return value

"""Enum members the per-span paths compare against, as module constants.

``SpanKind.SERVER`` is a class-attribute look-up through the enum machinery (~70 ns on CPython
3.11) each time it is written; a module constant imported under a private name is one global
read. Compare with ``is``: ``kind in frozenset(...)`` hashes the enum in Python.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["CONSUMER", "ERROR", "SERVER"]

SERVER: Final = SpanKind.SERVER
CONSUMER: Final = SpanKind.CONSUMER
ERROR: Final = StatusCode.ERROR

"""Guards that keep prodlens's own failures out of the host application.

At request time nothing prodlens does may raise into application code: internal errors are
caught where they happen (``with guard("where"):``) and logged once per kind (bounded), never
re-raised.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Final

__all__ = ["guard", "internal_error", "log_once", "logger", "reset_log_once"]

logger: Final = logging.getLogger("prodlens")

_MAX_KEYS: Final = 1024
_logged: set[str] = set()
_lock = threading.Lock()


def log_once(key: str, level: int, message: str, *args: object) -> None:
    """Log ``message`` the first time ``key`` is seen; later calls with that key are silent.

    The set of keys is bounded, so a stream of distinct keys cannot grow memory.
    """
    if key in _logged:
        return
    with _lock:
        if key in _logged or len(_logged) >= _MAX_KEYS:
            return
        _logged.add(key)
    logger.log(level, message, *args)


def reset_log_once() -> None:
    """Forget which messages were logged, so each is logged again once (tests; see
    :func:`prodlens.testing.reset`)."""
    with _lock:
        _logged.clear()


def internal_error(where: str, error: BaseException) -> None:
    """Record that prodlens failed in ``where``; logged once per place and error type."""
    log_once(
        f"internal:{where}:{type(error).__name__}",
        logging.WARNING,
        "prodlens: internal error in %s (%s: %s); the application continues, this request may "
        "be untagged. Further errors of this kind are not logged.",
        where,
        type(error).__name__,
        error,
    )


class guard:
    """Swallow and log (once) any ``Exception`` raised inside the block.

    ``BaseException``s that are not errors (``KeyboardInterrupt``, ``SystemExit``,
    ``GeneratorExit``) pass through. A class rather than ``@contextmanager``: it costs a
    fifth as much, and it runs on request paths.

    Example::

        >>> with guard("an example"):
        ...     raise RuntimeError("boom")  # logged once; the caller carries on
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is not None and isinstance(exc, Exception):
            internal_error(self.where, exc)
            return True
        return False

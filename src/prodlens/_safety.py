"""Guards that keep prodlens's own failures out of the host application.

At request time nothing prodlens does may raise into application code: internal errors are
caught where they happen and logged once per kind (bounded), never re-raised.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

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

"""Keyed pseudonyms for customer ids (HMAC-SHA256).

With ``PRODLENS_PSEUDONYMIZE=true`` and ``PRODLENS_PSEUDONYM_KEY`` set, the customer id is
replaced by its pseudonym before it reaches any span, metric or baggage header, and written to
``enduser.pseudo.id``. The pseudonym is stable for a key, so support can map an affected
customer back with :func:`pseudonym`.
"""

from __future__ import annotations

import hashlib
import hmac

from prodlens import _runtime
from prodlens.config import ConfigError

#: Ids longer than this are hashed on their first this-many characters (bounded work).
HASH_INPUT_LIMIT = 65536


def compute_pseudonym(customer_id: str, key: str) -> str:
    """HMAC-SHA256 of ``customer_id`` under ``key``, as 64 lowercase hex characters."""
    customer_id = customer_id[:HASH_INPUT_LIMIT]
    return hmac.new(key.encode("utf-8"), customer_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(customer_id: str, key: str | None = None) -> str:
    """The pseudonym prodlens writes for ``customer_id``.

    Args:
        customer_id: the raw customer id, as the application passed it.
        key: the HMAC key; defaults to the configured ``PRODLENS_PSEUDONYM_KEY``.

    Raises:
        ConfigError: no key given and none configured.

    Example::

        >>> import prodlens
        >>> prodlens.pseudonym("acme", key="0123456789abcdef")[:16]
        '6e0e7e1a0ba3cb5c'
    """
    if key is None:
        key = _runtime.current().settings.pseudonym_key
    if not key:
        raise ConfigError(
            "PRODLENS_PSEUDONYM_KEY=(not set) (from the environment) is not valid for "
            "prodlens.pseudonym(): expected a secret of at least 16 characters, or pass key="
        )
    return compute_pseudonym(customer_id, key)

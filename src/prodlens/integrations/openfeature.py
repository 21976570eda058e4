"""OpenFeature: every flag evaluation's variant becomes a cohort, ``flag.<key>``.

A bad flag rollout is the textbook partial failure: the customers on one variant fail, the rest
do not. :class:`ProdlensHook` records the variant each evaluation served (the provider's variant
name; when the provider reports none, the evaluated value if it is a string, number or boolean;
on an evaluation error, the default value that was served) as the cohort ``flag.<key>``, the
key normalised to cohort-name rules: ``new-checkout``, ``newCheckout`` and ``NewCheckout`` all
become ``flag.new_checkout``.

Inside a request (an integration's scope, ``prodlens.tag()``) the cohort joins the request's
identity: the current span, its open ancestors (the server span) and every later span of the
request carry it. Outside any scope only the current span and its open ancestors are tagged;
nothing outlives them. Flags are bounded like every cohort (``PRODLENS_MAX_COHORTS``,
``PRODLENS_MAX_COHORT_VALUES``).

``ProdlensInstrumentor`` registers the hook globally when ``openfeature.api`` is imported
(``pip install "prodlens[openfeature]"``); in code, one call does it::

    from prodlens.integrations.openfeature import install
    install()

No environment variable of its own; ``PRODLENS_ENABLED=false`` turns it off with the rest::

    export PRODLENS_MAX_COHORTS=48   # one cohort per flag evaluated in a request
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from prodlens import _runtime
from prodlens._grammar import valid_cohort_name
from prodlens._safety import guard, log_once
from prodlens._scope import SCOPE, apply, tag_open_spans
from prodlens.identity import build, normalize_cohorts
from prodlens.integrations import _patching

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
    from openfeature.hook import Hook, HookContext, HookHints
else:
    # The SDK is the ``[openfeature]`` extra: this module imports without it (the instrumentor
    # imports every integration), and only patches once ``openfeature.api`` is imported.
    try:
        from openfeature.hook import Hook
    except ImportError:
        Hook = object

__all__ = ["TARGET", "ProdlensHook", "flag_cohort_name", "install", "patch", "uninstall"]

#: ``openfeature`` is a namespace package (post-import hooks never fire for it): patch when its
#: ``api`` module is imported.
TARGET: Final = "openfeature.api"
#: Prefix of flag cohorts.
FLAG_PREFIX: Final = "flag."

_ACRONYM_RE: Final = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_RE: Final = re.compile(r"([a-z0-9])([A-Z])")
_INVALID_RE: Final = re.compile(r"[^a-z0-9_.]+")
_UNDERSCORES_RE: Final = re.compile(r"_{2,}")
#: Flag keys longer than this are cut before normalising (bounded work per key).
_MAX_KEY_CHARS: Final = 256
_MAX_CACHED_KEYS: Final = 1024
_names: dict[str, str | None] = {}


def flag_cohort_name(key: str) -> str | None:
    """The cohort name for flag ``key`` (``flag.`` + key in snake case), or None if nothing of
    the key survives normalising.

    Example::

        >>> flag_cohort_name("new-checkout"), flag_cohort_name("newCheckout")
        ('flag.new_checkout', 'flag.new_checkout')
        >>> flag_cohort_name("HTTPServer v2")
        'flag.http_server_v2'
    """
    cached = _names.get(key, "")
    if cached != "":
        return cached
    # Accents dropped, not the letters: "crème" -> "creme".
    text = unicodedata.normalize("NFKD", key[:_MAX_KEY_CHARS]).encode("ascii", "ignore").decode()
    text = _ACRONYM_RE.sub(r"\1_\2", text)
    text = _CAMEL_RE.sub(r"\1_\2", text).lower()
    text = _UNDERSCORES_RE.sub("_", _INVALID_RE.sub("_", text)).strip("_.")
    name: str | None = (FLAG_PREFIX + text)[:64].rstrip("_.") if text else None
    if name is not None and not valid_cohort_name(name):
        name = None
    if len(_names) >= _MAX_CACHED_KEYS:
        _names.clear()
    _names[key] = name
    return name


def _served(details: FlagEvaluationDetails[Any]) -> object | None:
    """What the evaluation served: the variant name, else a scalar value."""
    if details.variant:
        return details.variant
    value = details.value
    if isinstance(value, (str, bool, int, float)):
        return value
    return None


def record(flag_key: str, served: object) -> None:
    """Record ``served`` as the cohort of flag ``flag_key``. Never raises."""
    with guard("OpenFeature hook"):
        runtime = _runtime.current()
        if not runtime.on or served is None or not isinstance(flag_key, str):
            return
        name = flag_cohort_name(flag_key)
        if name is None:
            log_once(f"openfeature:bad-key:{flag_key[:64]!r}", logging.WARNING,
                     "prodlens: flag key %r has no usable cohort name; not recorded",
                     flag_key[:64])
            return
        settings = runtime.settings
        cohorts = normalize_cohorts([(name, served)], settings, runtime.limiter,
                                    where="OpenFeature hook")
        if not cohorts:
            return
        update = build(None, cohorts, False, settings)
        if SCOPE.get() is not None:
            apply(update)  # joins the request's identity: later spans carry it too
            return
        tag_open_spans(update, None)  # outside any scope: the open spans only


class ProdlensHook(Hook):
    """An OpenFeature hook recording each evaluation's variant as the cohort ``flag.<key>``.

    Runs in ``finally_after``, so an evaluation that failed records the default it served.
    Never raises into the evaluation.

    Example::

        from openfeature import api
        from prodlens.integrations.openfeature import ProdlensHook

        api.get_client().get_boolean_value("new-checkout", False)  # with the hook added:
        api.add_hooks([ProdlensHook()])                             # flag.new_checkout=on
    """

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        with guard("OpenFeature hook"):  # never into the evaluation
            record(hook_context.flag_key, _served(details))


_lock = threading.Lock()
_installed: list[ProdlensHook] = []


def install() -> ProdlensHook:
    """Register :class:`ProdlensHook` globally (``openfeature.api.add_hooks``), once.

    Returns:
        The registered hook (the same one on later calls).

    Example::

        >>> from prodlens.integrations.openfeature import install, uninstall
        >>> install() is install()
        True
        >>> uninstall()
    """
    from openfeature import api

    with _lock:
        if _installed and any(h is _installed[0] for h in api.get_hooks()):
            return _installed[0]
        hook = _installed[0] if _installed else ProdlensHook()
        _installed[:] = [hook]
        api.add_hooks([hook])
        return hook


def uninstall() -> None:
    """Remove the hook :func:`install` registered, keeping every other global hook."""
    from openfeature import api

    with _lock:
        if not _installed:
            return
        hook = _installed.pop()
        others = [h for h in api.get_hooks() if h is not hook]
        if len(others) != len(api.get_hooks()):
            api.clear_hooks()
            api.add_hooks(others)


def patch(module: ModuleType) -> None:
    """Register the hook globally (idempotent); ``uninstrument`` removes it."""
    install()
    _patching.on_unpatch(uninstall)

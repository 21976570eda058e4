"""Outbound propagation: identity in the outgoing W3C ``baggage`` header, for allowlisted hosts.

Off by default. ``PRODLENS_PROPAGATE_TO`` lists destination patterns, matched against the host of
the request URL as written (no DNS lookup):

- host globs (``fnmatch``, case-insensitive): ``*.internal``, ``api.example.com``,
  ``localhost`` (the *name* ``localhost``; ``127.0.0.1`` is not it);
- CIDR ranges, matched by hosts written as IP literals: ``10.0.0.0/8``, ``127.0.0.0/8``;
- ``*``: every destination.

For a matching destination the prodlens members (``prodlens.customer``,
``prodlens.cohort.<name>``) are merged into the ``baggage`` header that is about to be sent,
keeping every other member. They are added at the transport, below the OpenTelemetry client
instrumentations (which rewrite ``baggage`` from the context): urllib3's
``HTTPConnection.request`` (so ``requests`` and ``urllib3``), httpcore's connection pools (so
``httpx``, sync and async) and aiohttp's ``ClientRequest.send``. A ``prodlens.*`` member already
in the header (sent by a client and carried by the context, or set by app code) is removed first,
for every destination: a matching destination gets only this request's identity (nothing when
the request has none), and every other destination gets no prodlens member at all::

    export PRODLENS_PROPAGATE_TO='*.internal,10.0.0.0/8,localhost'

Identity is put into OpenTelemetry's own baggage (so gRPC or messaging propagators carry it) by
no integration: with ``*`` the HTTP clients above already send it everywhere, and putting it in
the context would hand it to every propagator and every third-party API, which is the trade-off
``*`` already accepts for HTTP; keep lists explicit where you can.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final
from urllib.parse import urlsplit

from prodlens import _runtime
from prodlens._safety import guard
from prodlens._scope import current
from prodlens.baggage import may_hold_prodlens, merge_header, strip_members
from prodlens.integrations import _patching

__all__ = ["PATCHES", "baggage_for", "host_matches"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_compiled: dict[tuple[str, ...], tuple[bool, tuple[str, ...], tuple[IPNetwork, ...]]] = {}


def _compile(patterns: tuple[str, ...]) -> tuple[bool, tuple[str, ...], tuple[IPNetwork, ...]]:
    cached = _compiled.get(patterns)
    if cached is None:
        globs = tuple(p for p in patterns if "/" not in p)
        networks = tuple(ipaddress.ip_network(p, strict=False) for p in patterns if "/" in p)
        cached = ("*" in globs, globs, networks)
        if len(_compiled) > 16:
            _compiled.clear()
        _compiled[patterns] = cached
    return cached


def host_matches(host: str | None, patterns: tuple[str, ...]) -> bool:
    """True if ``host`` (as written in the URL) matches one of ``patterns``; no DNS lookup.

    Example::

        >>> host_matches("api.internal", ("*.internal",))
        True
        >>> host_matches("127.0.0.1", ("localhost",))
        False
        >>> host_matches("127.0.0.1", ("127.0.0.0/8",))
        True
    """
    if not host or not patterns:
        return False
    everything, globs, networks = _compile(patterns)
    if everything:
        return True
    name = host.strip("[]").rstrip(".").lower()
    if networks:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if address is not None:
            return any(address.version == n.version and address in n for n in networks)
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def baggage_for(host: str | None, existing: str | None) -> str | None:
    """The ``baggage`` header to send to ``host``, or None to leave it as it is.

    Matching host with an identity in force: ``existing`` without its prodlens members, merged
    with the identity. Otherwise (another host, or no identity): ``existing`` without prodlens
    members, only when it had some. So no ``prodlens.*`` member leaves the process unless
    prodlens wrote it from this request's identity: members a client forged into inbound
    baggage, or app code set in the context, never pass through.

    Fails closed: if deciding raises, the request goes out with no ``baggage`` header at all
    (``""``) rather than with one prodlens could not check.
    """
    with guard("outbound baggage"):
        return _rewrite(host, existing)
    return "" if existing else None


def _rewrite(host: str | None, existing: str | None) -> str | None:
    runtime = _runtime.current()
    if not runtime.on:
        return None
    if host_matches(host, runtime.settings.propagate_to):
        identity = current()
        if identity is not None and (identity.customer is not None or identity.cohorts):
            return merge_header(existing, identity)
    if existing and may_hold_prodlens(existing):
        stripped = strip_members(existing)
        return None if stripped == existing else stripped
    return None


# --------------------------------------------------------------------------- urllib3 / requests


def _urllib3_request(wrapped: Any, instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    with guard("outbound baggage (urllib3)"):
        url = args[1] if len(args) > 1 else kwargs.get("url", "")
        if isinstance(url, str) and "://" in url:  # absolute form (through a proxy)
            host = urlsplit(url).hostname
        else:
            host = getattr(instance, "_tunnel_host", None) or getattr(instance, "host", None)
        headers = args[3] if len(args) > 3 else kwargs.get("headers")
        # Every spelling of the header (a plain dict may hold "baggage" and "Baggage"): one
        # left unread would carry its members past the rewrite.
        keys = [] if headers is None else [
            key for key in headers if isinstance(key, str) and key.lower() == "baggage"]
        existing = ",".join(str(headers[key]) for key in keys) if headers and keys else None
        value = baggage_for(host, existing)
        if value is not None:
            new_headers = dict(headers) if headers is not None else {}
            for key in keys:
                new_headers.pop(key, None)
            if value:
                new_headers["baggage"] = value
            if len(args) > 3:
                args = (*args[:3], new_headers, *args[4:])
            else:
                kwargs = {**kwargs, "headers": new_headers}
    return wrapped(*args, **kwargs)


def patch_urllib3(module: ModuleType) -> None:
    """Patch ``urllib3.connection.HTTPConnection.request`` (used by requests and urllib3)."""
    _patching.wrap(module.HTTPConnection, "request", _urllib3_request)


# --------------------------------------------------------------------------- httpx (httpcore)


def _httpcore_update(request: Any) -> None:
    with guard("outbound baggage (httpx)"):
        host_raw = request.url.host
        host = host_raw.decode("ascii", "replace") if isinstance(host_raw, bytes) else host_raw
        headers = list(request.headers)
        # Every ``baggage`` header: one left unread would carry its members past the rewrite.
        found = [val.decode("latin-1") for key, val in headers if key.lower() == b"baggage"]
        value = baggage_for(host, ",".join(found) if found else None)
        if value is None:
            return
        if found:
            headers = [(key, val) for key, val in headers if key.lower() != b"baggage"]
        if value:
            headers.append((b"baggage", value.encode("ascii", "replace")))
        request.headers = headers


def _httpcore_sync(wrapped: Any, instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    _httpcore_update(args[0] if args else kwargs.get("request"))
    return wrapped(*args, **kwargs)


async def _httpcore_async(wrapped: Any, instance: Any, args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> Any:
    _httpcore_update(args[0] if args else kwargs.get("request"))
    return await wrapped(*args, **kwargs)


def patch_httpcore(module: ModuleType) -> None:
    """Patch httpcore's sync and async connection pools (the transports under httpx)."""
    _patching.wrap(module.ConnectionPool, "handle_request", _httpcore_sync)
    _patching.wrap(module.AsyncConnectionPool, "handle_async_request", _httpcore_async)


# --------------------------------------------------------------------------- aiohttp


async def _aiohttp_send(wrapped: Any, instance: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
    with guard("outbound baggage (aiohttp)"):
        headers = instance.headers
        found = headers.getall("baggage", ())
        value = baggage_for(instance.url.host, ",".join(found) if found else None)
        if value is not None:
            headers.popall("baggage", None)
            if value:
                headers["baggage"] = value
    return await wrapped(*args, **kwargs)


def patch_aiohttp(module: ModuleType) -> None:
    """Patch ``aiohttp.client_reqrep.ClientRequest.send`` (after aiohttp's trace hooks)."""
    _patching.wrap(module.ClientRequest, "send", _aiohttp_send)


#: (module whose import triggers the patch, patch function), for ``ProdlensInstrumentor``.
PATCHES: Final[tuple[tuple[str, Callable[[ModuleType], None]], ...]] = (
    ("urllib3.connection", patch_urllib3),
    ("httpcore", patch_httpcore),
    ("aiohttp.client_reqrep", patch_aiohttp),
)

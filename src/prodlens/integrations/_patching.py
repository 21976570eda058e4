"""One registry of every patch prodlens applied, so uninstrumenting removes exactly those.

Integrations wrap with :func:`wrap` (wrapt's ``wrap_function_wrapper``) and never unwrap by
hand: ``unpatch_all()`` walks the registry, so the wrap and unwrap lists cannot drift apart.
Post-import hooks (wrapt) patch a framework whenever it is imported, before or after prodlens.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from types import FunctionType, ModuleType
from typing import Any

import wrapt

from prodlens import _runtime
from prodlens._safety import guard, internal_error

__all__ = ["has_parameters", "on_import", "on_unpatch", "patched", "replace", "unpatch_all",
           "wrap", "wrap_while"]

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]

_lock = threading.RLock()
_patches: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)
#: Module name -> the patch to run when it is imported, while instrumenting.
_hooks: dict[str, Callable[[ModuleType], None]] = {}
#: Modules with a wrapt post-import hook (wrapt cannot remove one: it looks ``_hooks`` up).
_registered: set[str] = set()
#: Undo actions that are not attribute wraps (signal receivers, registered hooks).
_undo: list[Callable[[], None]] = []
#: Patches made only while a condition on the settings holds: (owner, attribute, wrapper,
#: condition); re-evaluated whenever settings are installed.
_conditional: list[tuple[Any, str, Wrapper, Callable[[], bool]]] = []
_active = False


def wrap(owner: Any, attribute: str, wrapper: Wrapper) -> None:
    """Wrap ``owner.attribute`` with a wrapt ``wrapper(wrapped, instance, args, kwargs)``,
    once; recorded for :func:`unpatch_all`."""
    with _lock:
        for patched_owner, patched_attribute, _ in _patches:
            if patched_owner is owner and patched_attribute == attribute:
                return
        original = owner.__dict__[attribute] if attribute in vars(owner) else getattr(
            owner, attribute)
        wrapt.wrap_function_wrapper(owner, attribute, wrapper)
        _patches.append((owner, attribute, original))


def replace(owner: Any, attribute: str, make: Callable[[Any], Any], wrapper: Wrapper) -> None:
    """Replace ``owner.attribute`` by the plain function ``make(original)``, once; recorded
    for :func:`unpatch_all` like :func:`wrap`. When ``make`` returns None (the original is not
    the plain function it knows how to wrap), wrap with the wrapt ``wrapper`` instead.

    For the few per-request entry points (an ASGI or WSGI ``__call__``): a wrapt wrapper on a
    class binds a new ``BoundFunctionWrapper`` on every call, and FastAPI goes through three
    patched layers per request. ``bench/bench_entry_points.py`` measured the plain function
    saving ~2.6 us per layer that passes through and 1-3 us on the one that opens the scope:
    6-8 us per FastAPI request, about 3% of one. ``make`` must keep the original's signature
    (and ``async``-ness) and set ``__wrapped__`` (``functools.wraps``).
    """
    with _lock:
        if any(o is owner and a == attribute for o, a, _ in _patches):
            return
        original = owner.__dict__.get(attribute)
        replacement = None if original is None else make(original)
        if replacement is None:
            wrap(owner, attribute, wrapper)
            return
        setattr(owner, attribute, replacement)
        _patches.append((owner, attribute, original))


def has_parameters(original: Any, names: tuple[str, ...]) -> bool:
    """True if ``original`` is a plain Python function whose parameters are exactly ``names``,
    positional-or-keyword, without defaults (what a :func:`replace` function may mirror)."""
    if type(original) is not FunctionType:  # not a builtin, a partial, or a wrapt proxy (whose
        # __class__ says "function")
        return False
    code = original.__code__
    return (code.co_argcount == len(names) and code.co_varnames[:len(names)] == names
            and not original.__defaults__ and not code.co_kwonlyargcount
            and not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS))


def wrap_while(owner: Any, attribute: str, wrapper: Wrapper, condition: Callable[[], bool]
               ) -> None:
    """Like :func:`wrap`, but the patch is in place only while ``condition()`` is true; it is
    re-checked whenever ``prodlens.configure()`` or the instrumentor installs new settings.

    For hooks that have work to do only under some settings (late ``user``/``path`` sources):
    a request then pays for no wrapper it does not need.
    """
    with _lock:
        if not any(o is owner and a == attribute for o, a, _, _ in _conditional):
            _conditional.append((owner, attribute, wrapper, condition))
        _runtime.on_install(_refresh)
        _refresh()


def _refresh(runtime: object = None) -> None:
    """Apply or remove each conditional patch as its condition now says."""
    with _lock:
        for owner, attribute, wrapper, condition in _conditional:
            try:
                wanted = condition()
            except Exception as error:
                internal_error(f"checking the patch of {attribute}", error)
                continue
            if wanted:
                wrap(owner, attribute, wrapper)
            else:
                _unwrap(owner, attribute)


def _unwrap(owner: Any, attribute: str) -> None:
    for index, (patched_owner, patched_attribute, original) in enumerate(_patches):
        if patched_owner is owner and patched_attribute == attribute:
            setattr(owner, attribute, original)
            del _patches[index]
            return


def patched(owner: Any, attribute: str) -> bool:
    """True if prodlens has wrapped ``owner.attribute``."""
    with _lock:
        return any(o is owner and a == attribute for o, a, _ in _patches)


def on_unpatch(callback: Callable[[], None]) -> None:
    """Run ``callback`` in :func:`unpatch_all`: the undo of a patch that is not an attribute
    wrap (a connected signal receiver, a globally registered hook). Registered once per
    callback; record it when the patch is made, so the patch and its undo cannot drift apart."""
    with _lock:
        if callback not in _undo:
            _undo.append(callback)


def unpatch_all() -> None:
    """Restore every attribute :func:`wrap` replaced, newest first, run every
    :func:`on_unpatch` callback, and deactivate hooks."""
    global _active
    with _lock:
        _active = False
        # Forget the hooks too: an integration left out of the next instrument() (e.g. by
        # PRODLENS_DISABLED_INTEGRATIONS) must not be patched when its module is imported.
        _hooks.clear()
        _conditional.clear()
        while _undo:
            callback = _undo.pop()
            with guard("unpatching"):  # one failing undo must not block the others
                callback()
        while _patches:
            owner, attribute, original = _patches.pop()
            setattr(owner, attribute, original)


def _run_hook(name: str, module: ModuleType) -> None:
    hook = _hooks.get(name)
    if hook is None or not _active:
        return
    with guard(f"patching {name}"):  # never break the import of the framework
        hook(module)


def on_import(module_name: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` when ``module_name`` is imported (at once if it already is),
    while prodlens is instrumenting."""
    global _active
    with _lock:
        _active = True
        first = module_name not in _registered
        _registered.add(module_name)
        _hooks[module_name] = hook
    if first:
        wrapt.register_post_import_hook(
            lambda module: _run_hook(module_name, module), module_name
        )
    else:
        import sys

        module = sys.modules.get(module_name)
        if module is not None:
            _run_hook(module_name, module)

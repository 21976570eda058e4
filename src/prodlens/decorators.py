"""``prodlens.tag``: a scope of identity, as a context manager or a decorator.

As a decorator, values may be literals, callables that receive the call's arguments by name, or
``prodlens.arg("order.customer.id")`` paths into the bound arguments. The decorator chooses
sync, coroutine, generator or async-generator handling once, when it is applied, and binds
arguments with a signature computed once (wrapt keeps the signature and ``inspect`` intact).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Final, TypeVar, cast

import wrapt

from prodlens import _runtime
from prodlens._safety import internal_error
from prodlens.identity import (
    SCOPE,
    Identity,
    Scope,
    build,
    close_scope,
    merge,
    normalize_cohorts,
    normalize_customer,
    open_scope,
    valid_cohort_name,
)

__all__ = ["arg", "tag"]

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Final = object()


class arg:
    """A path into the decorated function's bound arguments, resolved at each call.

    The first segment names a parameter; each further segment is a mapping key or an attribute.

    Example::

        >>> import prodlens
        >>> @prodlens.tag(customer=prodlens.arg("order.customer_id"))
        ... def checkout(order):
        ...     return prodlens.current().customer
        >>> checkout({"customer_id": "acme"})
        'acme'
    """

    __slots__ = ("path", "segments")

    def __init__(self, path: str) -> None:
        segments = path.split(".")
        if not path or not all(segments):
            raise ValueError(f"prodlens.arg({path!r}): expected a dotted path such as 'order.id'")
        self.path = path
        self.segments = tuple(segments)

    def resolve(self, arguments: Mapping[str, Any]) -> object:
        value: object = arguments.get(self.segments[0], _MISSING)
        for segment in self.segments[1:]:
            if value is _MISSING or value is None:
                return None
            if isinstance(value, Mapping):
                value = value.get(segment, _MISSING)
            else:
                value = getattr(value, segment, _MISSING)
        return None if value is _MISSING else value

    def __repr__(self) -> str:
        return f"prodlens.arg({self.path!r})"


class _Extractor:
    """A callable given as a value: called with the bound arguments it names."""

    __slots__ = ("func", "names", "takes_all")

    def __init__(self, func: Callable[..., object]) -> None:
        self.func = func
        self.names: tuple[str, ...]
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            self.takes_all, self.names = True, ()
            return
        self.takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
        self.names = tuple(
            p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )

    def resolve(self, arguments: Mapping[str, Any]) -> object:
        if self.takes_all:
            return self.func(**arguments)
        return self.func(**{n: arguments[n] for n in self.names if n in arguments})


_Dynamic = arg | _Extractor


def _compile(value: object) -> object:
    if isinstance(value, arg):
        return value
    if callable(value) and not isinstance(value, (str, bytes, type)):
        return _Extractor(cast(Callable[..., object], value))
    return value


class tag:
    """Tag the spans of a block or a function with a customer and cohorts.

    Spans started inside get the identity; the span that was current when the scope opened
    (its parent) does not, even when ``identify()`` runs inside: a batch loop with one ``tag()``
    per item never stamps its long-lived parent with each item's customer. Values merge over
    the identity already in force.

    Args:
        customer: a literal, a callable, or :class:`arg` (decorator only for the last two).
        **cohorts: cohort name to literal, callable or :class:`arg`.

    Raises:
        ValueError: a cohort name is invalid (lowercase letters, digits, ``_``, ``.``).

    Example::

        >>> import prodlens
        >>> with prodlens.tag("acme", plan="pro"):
        ...     prodlens.current().cohorts["plan"]
        'pro'
        >>> @prodlens.tag(customer=lambda user: user["id"], plan="free")
        ... def handle(user):
        ...     return prodlens.current().customer
        >>> handle({"id": "globex"})
        'globex'
    """

    def __init__(self, customer: object = None, **cohorts: object) -> None:
        for name in cohorts:
            if not valid_cohort_name(name):
                raise ValueError(
                    f"prodlens.tag(): invalid cohort name {name!r}: use lowercase letters, "
                    "digits, '_' and '.', at most 64 characters (e.g. 'plan', 'app.version')"
                )
        self._customer = _compile(customer)
        self._cohorts = {name: _compile(value) for name, value in cohorts.items()}
        self._dynamic = isinstance(self._customer, _Dynamic) or any(
            isinstance(v, _Dynamic) for v in self._cohorts.values()
        )
        self._static: tuple[int, Identity] | None = None
        #: One per open ``with`` (None where prodlens could not open a scope).
        self._tokens: list[contextvars.Token[Scope | None] | None] = []

    # -- identity -------------------------------------------------------------------------
    def _identity(self, arguments: Mapping[str, Any] | None) -> Identity:
        if not self._dynamic:
            generation = _runtime.current().generation
            static = self._static
            if static is not None and static[0] == generation:
                return static[1]
        customer = self._value(self._customer, arguments, "customer")
        cohorts = [(n, self._value(v, arguments, n)) for n, v in self._cohorts.items()]
        name, pseudo = normalize_customer(customer)
        identity = build(name, normalize_cohorts(cohorts, where="prodlens.tag()"), pseudo)
        if not self._dynamic:
            self._static = (_runtime.current().generation, identity)
        return identity

    @staticmethod
    def _value(value: object, arguments: Mapping[str, Any] | None, what: str) -> object:
        if not isinstance(value, _Dynamic):
            return value
        if arguments is None:
            return None
        try:
            return value.resolve(arguments)
        except Exception as error:  # the user's extractor raised: run the function untagged
            internal_error(f"prodlens.tag() extraction of {what}", error)
            return None

    def _open(self, arguments: Mapping[str, Any] | None) -> contextvars.Token[Scope | None] | None:
        try:
            outer = SCOPE.get()
            identity = merge(outer.identity if outer is not None else None,
                             self._identity(arguments))
            return open_scope(identity, isolate_ancestors=True)
        except Exception as error:
            internal_error("prodlens.tag()", error)
            return None

    @staticmethod
    def _close(token: contextvars.Token[Scope | None] | None) -> None:
        if token is not None:
            try:
                close_scope(token)
            except Exception as error:
                internal_error("prodlens.tag() exit", error)

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Identity | None:
        token = self._open(None)
        self._tokens.append(token)
        return None if token is None else SCOPE.get().identity  # type: ignore[union-attr]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tokens:
            self._close(self._tokens.pop())

    async def __aenter__(self) -> Identity | None:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator ------------------------------------------------------------------------
    def __call__(self, wrapped: F) -> F:
        func = wrapped.__func__ if isinstance(wrapped, (classmethod, staticmethod)) else wrapped
        kind = (
            "static" if isinstance(wrapped, staticmethod)
            else "class" if isinstance(wrapped, classmethod)
            else "function"
        )
        signature: inspect.Signature | None = None
        if self._dynamic:
            signature = inspect.signature(func)

        def arguments(instance: object, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Mapping[str, Any] | None:
            if signature is None:
                return None
            try:
                if instance is not None and kind != "static" and not (
                    kind == "function" and inspect.isclass(instance)
                ):
                    bound = signature.bind(instance, *args, **kwargs)
                else:
                    bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                return bound.arguments
            except TypeError:
                return None  # the call itself is wrong; the function will raise as usual

        open_ = self._open
        close = self._close

        if inspect.isasyncgenfunction(func):
            @wrapt.decorator
            def async_gen_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                return _drive_async_gen(w(*args, **kwargs), self, arguments(instance, args, kwargs))

            return cast(F, async_gen_wrapper(wrapped))

        if inspect.isgeneratorfunction(func):
            @wrapt.decorator
            def gen_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                return _drive_gen(w(*args, **kwargs), self, arguments(instance, args, kwargs))

            return cast(F, gen_wrapper(wrapped))

        if inspect.iscoroutinefunction(func):
            @wrapt.decorator
            async def coro_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                token = open_(arguments(instance, args, kwargs))
                try:
                    return await w(*args, **kwargs)
                finally:
                    close(token)

            return cast(F, coro_wrapper(wrapped))

        @wrapt.decorator
        def wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            token = open_(arguments(instance, args, kwargs))
            try:
                return w(*args, **kwargs)
            finally:
                close(token)

        return cast(F, wrapper(wrapped))


def _drive_gen(
    gen: Generator[Any, Any, Any], owner: tag, arguments: Mapping[str, Any] | None
) -> Generator[Any, Any, Any]:
    """Run each step of ``gen`` inside the scope; the scope is never left open across a yield."""
    identity_token = owner._open(arguments)
    scope = SCOPE.get() if identity_token is not None else None
    owner._close(identity_token)

    def step(method: Callable[..., Any], *value: Any) -> Any:
        token = SCOPE.set(scope) if scope is not None else None
        try:
            return method(*value)
        finally:
            if token is not None:
                close_scope(token)

    send_value: Any = None
    method: Callable[..., Any] = gen.send
    while True:
        try:
            item = step(method, send_value)
        except StopIteration as stop:
            return stop.value
        try:
            send_value = yield item
            method = gen.send
        except GeneratorExit:
            step(gen.close)
            raise
        except BaseException as error:  # thrown into us: throw into the wrapped generator
            send_value, method = error, gen.throw


async def _drive_async_gen(
    agen: AsyncGenerator[Any, Any], owner: tag, arguments: Mapping[str, Any] | None
) -> AsyncGenerator[Any, Any]:
    """Async twin of :func:`_drive_gen`."""
    identity_token = owner._open(arguments)
    scope = SCOPE.get() if identity_token is not None else None
    owner._close(identity_token)

    async def step(method: Callable[..., Any], *value: Any) -> Any:
        token = SCOPE.set(scope) if scope is not None else None
        try:
            return await method(*value)
        finally:
            if token is not None:
                close_scope(token)

    send_value: Any = None
    method: Callable[..., Any] = agen.asend
    while True:
        try:
            item = await step(method, send_value)
        except StopAsyncIteration:
            return
        try:
            send_value = yield item
            method = agen.asend
        except GeneratorExit:
            await step(agen.aclose)
            raise
        except BaseException as error:
            send_value, method = error, agen.athrow


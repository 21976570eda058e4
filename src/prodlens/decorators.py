"""``prodlens.tag``: a scope of identity, as a context manager or a decorator.

As a decorator, values may be literals, callables that receive the call's arguments by name, or
``prodlens.arg("order.customer.id")`` paths into the bound arguments. The decorator chooses
sync, coroutine, generator or async-generator handling once, when it is applied, and binds
arguments with a signature computed once (wrapt keeps the signature and ``inspect`` intact).

A ``tag`` instance holds no per-use state: the scope it opens (and the token that closes it)
lives in the current context, so one instance, say a module-level ``BATCH = prodlens.tag(...)``,
is safe to share across threads and asyncio tasks.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast, overload

import wrapt

from prodlens import _runtime
from prodlens._grammar import COHORT_NAME_GRAMMAR, valid_cohort_name
from prodlens._safety import guard, internal_error
from prodlens._scope import (
    SCOPE,
    ScopeToken,
    close_owned,
    close_scope,
    open_scope,
    resume_scope,
)
from prodlens.identity import Identity, build, merge, normalize_cohorts, normalize_customer

__all__ = ["arg", "tag"]

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound="classmethod[Any, Any, Any] | staticmethod[Any, Any]")
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
                    f"prodlens.tag(): invalid cohort name {name!r}: expected "
                    + COHORT_NAME_GRAMMAR
                )
        self._customer = _compile(customer)
        self._cohorts = {name: _compile(value) for name, value in cohorts.items()}
        self._dynamic = isinstance(self._customer, _Dynamic) or any(
            isinstance(v, _Dynamic) for v in self._cohorts.values()
        )
        #: The identity of a tag without dynamic values, with the settings generation it was
        #: built under (an immutable value: sharing it between threads is safe).
        self._static: tuple[int, Identity] | None = None

    # -- identity -------------------------------------------------------------------------
    def _identity(self, arguments: Mapping[str, Any] | None,
                  runtime: _runtime.Runtime) -> Identity:
        if not self._dynamic:
            static = self._static
            if static is not None and static[0] == runtime.generation:
                return static[1]
        settings = runtime.settings
        customer = self._value(self._customer, arguments, "customer")
        cohorts = [(n, self._value(v, arguments, n)) for n, v in self._cohorts.items()]
        name, pseudo = normalize_customer(customer, settings)
        identity = build(name, normalize_cohorts(cohorts, settings, runtime.limiter,
                                                 where="prodlens.tag()"), pseudo, settings)
        if not self._dynamic:
            self._static = (runtime.generation, identity)
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

    def _open(self, arguments: Mapping[str, Any] | None) -> ScopeToken | None:
        """Open this tag's scope in the current context; None if prodlens failed (logged)."""
        with guard("prodlens.tag()"):
            runtime = _runtime.current()
            _runtime.warn_if_unattached("prodlens.tag()")
            outer = SCOPE.get()
            identity = merge(outer.identity if outer is not None else None,
                             self._identity(arguments, runtime), runtime.settings)
            return open_scope(identity, isolate_ancestors=True, owner=self)
        return None

    @staticmethod
    def _close(token: ScopeToken | None) -> None:
        if token is not None:
            close_scope(token)  # never raises

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> Identity | None:
        if self._open(None) is None:
            return None
        scope = SCOPE.get()
        return None if scope is None else scope.identity

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The token is in the scope this tag opened in *this* context, not on the instance.
        close_owned(self)

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
    @overload
    def __call__(self, wrapped: M) -> M: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, wrapped: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, wrapped: Any) -> Any:
        """Decorate a function, method, classmethod, staticmethod, coroutine function,
        generator or async generator function; its signature is kept."""
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

        if inspect.isasyncgenfunction(func):
            @wrapt.decorator
            def async_gen_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                return _drive_async_gen(w(*args, **kwargs), self, arguments(instance, args, kwargs))

            return async_gen_wrapper(wrapped)

        if inspect.isgeneratorfunction(func):
            @wrapt.decorator
            def gen_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                return _drive_gen(w(*args, **kwargs), self, arguments(instance, args, kwargs))

            return gen_wrapper(wrapped)

        if inspect.iscoroutinefunction(func):
            @wrapt.decorator
            async def coro_wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                token = self._open(arguments(instance, args, kwargs))
                try:
                    return await w(*args, **kwargs)
                finally:
                    self._close(token)

            return coro_wrapper(wrapped)

        @wrapt.decorator
        def wrapper(w: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            token = self._open(arguments(instance, args, kwargs))
            try:
                return w(*args, **kwargs)
            finally:
                self._close(token)

        return wrapper(wrapped)


def _drive_gen(
    gen: Generator[Any, Any, Any], owner: tag, arguments: Mapping[str, Any] | None
) -> Generator[Any, Any, Any]:
    """Run each step of ``gen`` inside the scope; the scope is never left open across a yield."""
    identity_token = owner._open(arguments)
    scope = SCOPE.get() if identity_token is not None else None
    owner._close(identity_token)

    def step(method: Callable[..., Any], *value: Any) -> Any:
        token = resume_scope(scope) if scope is not None else None
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
        token = resume_scope(scope) if scope is not None else None
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


"""Settings: one table of parameters, read once from the environment into a frozen object.

Every ``PRODLENS_*`` variable is a row of :data:`PARAMETERS`; the configuration reference in
``docs/configuration.md`` is generated from this table and checked against it in CI. Cohort
sources form one family of variables, ``PRODLENS_COHORT_<NAME>_FROM``.

Example::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=jwt:plan
    export PRODLENS_MAX_COHORT_VALUES=200
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from prodlens import attributes

__all__ = [
    "PARAMETERS",
    "SOURCE_KINDS",
    "ConfigError",
    "Parameter",
    "Settings",
    "Source",
    "load_settings",
]

ENV_PREFIX: Final = "PRODLENS_"
COHORT_SOURCE_RE: Final = re.compile(r"^PRODLENS_COHORT_([A-Z0-9_]+)_FROM$")
COHORT_NAME_RE: Final = re.compile(r"^[a-z0-9_][a-z0-9_.]*$")

#: Source kinds and whether they need a name after the colon.
SOURCE_KINDS: Final[Mapping[str, bool]] = {
    "header": True,
    "cookie": True,
    "query": True,
    "path": True,
    "jwt": True,
    "user": False,
    "baggage": False,
}
SOURCE_GRAMMAR: Final = (
    "a comma-separated list of header:NAME, cookie:NAME, query:NAME, path:PARAM, "
    "jwt:CLAIM (dotted for nested claims), user, user:ATTR, baggage, baggage:KEY"
)


class ConfigError(ValueError):
    """A setting has a value prodlens cannot accept.

    The message names the setting, the bad value, what is accepted and where the value came from.

    Example::

        >>> import prodlens
        >>> try:
        ...     prodlens.configure(max_cohort_values=-1)
        ... except prodlens.ConfigError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        PRODLENS_MAX_COHORT_VALUES=-1 (from configure(max_cohort_values=...)) is not valid: ...
    """


@dataclass(frozen=True, slots=True)
class Source:
    """One place identity can be read from, e.g. ``header:x-customer-id`` or ``user``."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


class _Invalid(Exception):
    """Raised by a value parser; turned into a :class:`ConfigError` with the setting's name."""

    def __init__(self, accepted: str) -> None:
        super().__init__(accepted)
        self.accepted = accepted


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Invalid("one of true, false, 1, 0, yes, no, on, off")


def _int_parser(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _Invalid(f"a whole number >= {minimum}") from None
        if value < minimum:
            raise _Invalid(f"a whole number >= {minimum}")
        return value

    return parse


def _float_parser(minimum: float, maximum: float | None) -> Callable[[str], float]:
    accepted = (
        f"a number from {minimum:g} to {maximum:g}" if maximum is not None
        else f"a number >= {minimum:g}"
    )

    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _Invalid(accepted) from None
        if value != value or value < minimum or (maximum is not None and value > maximum):
            raise _Invalid(accepted)
        return value

    return parse


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_attribute_name(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 255 or any(ch.isspace() for ch in value):
        raise _Invalid("a non-empty attribute name without spaces, at most 255 characters")
    return value


def _parse_key(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if len(value) < 16:
        raise _Invalid("a secret of at least 16 characters")
    return value


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(_split(raw))


def parse_sources(raw: str) -> tuple[Source, ...]:
    """Parse a source list such as ``jwt:plan,header:x-plan``; raises on bad grammar."""
    sources: list[Source] = []
    parts = raw.split(",")
    for part in parts:
        item = part.strip()
        if not item:
            if len(parts) > 1:
                raise _Invalid(SOURCE_GRAMMAR + " (an empty entry was found)")
            continue
        kind, _, name = item.partition(":")
        kind = kind.strip().lower()
        name = name.strip()
        if kind not in SOURCE_KINDS:
            raise _Invalid(SOURCE_GRAMMAR + f" (unknown kind {kind!r})")
        if SOURCE_KINDS[kind] and not name:
            raise _Invalid(SOURCE_GRAMMAR + f" ({kind} needs a name: {kind}:NAME)")
        if ":" in item and not name:
            raise _Invalid(SOURCE_GRAMMAR + f" (empty name after {kind}:)")
        if kind in ("header",):
            name = name.lower()
        sources.append(Source(kind, name))
    return tuple(sources)


_HOST_GLOB_RE: Final = re.compile(r"^[A-Za-z0-9*?.\-_\[\]]+$")
PROPAGATE_GRAMMAR: Final = (
    "a comma-separated list of host globs (*.internal, localhost), CIDR ranges "
    "(10.0.0.0/8, 127.0.0.0/8) or *"
)


def _parse_patterns(raw: str) -> tuple[str, ...]:
    patterns: list[str] = []
    for item in _split(raw):
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise _Invalid(PROPAGATE_GRAMMAR + f" ({item!r} is not a CIDR range)") from None
        elif not _HOST_GLOB_RE.match(item):
            raise _Invalid(PROPAGATE_GRAMMAR + f" ({item!r} is not a host glob)")
        patterns.append(item.lower())
    return tuple(patterns)


def _parse_watch_list(raw: str) -> tuple[tuple[str, str], ...]:
    accepted = "a comma-separated list of customer:ID or COHORT:VALUE, e.g. customer:acme,plan:pro"
    watched: list[tuple[str, str]] = []
    for item in _split(raw):
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not value or not (name == "customer" or COHORT_NAME_RE.match(name)):
            raise _Invalid(accepted + f" ({item!r} does not match)")
        watched.append((name, value))
    return tuple(watched)


@dataclass(frozen=True, slots=True)
class Parameter:
    """One row of the settings table: a field of :class:`Settings` and its variable."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: str
    type: str
    doc: str
    example: str
    secret: bool = False


PARAMETERS: Final[tuple[Parameter, ...]] = (
    Parameter("enabled", "PRODLENS_ENABLED", _parse_bool, "true", "bool",
              "Master switch. Off: no span, metric or header is touched.", "false"),
    Parameter("customer_attribute", "PRODLENS_CUSTOMER_ATTRIBUTE", _parse_attribute_name,
              attributes.DEFAULT_CUSTOMER_ATTRIBUTE, "str",
              "Span attribute that carries the customer id.", "app.customer.id"),
    Parameter("cohort_prefix", "PRODLENS_COHORT_PREFIX", _parse_str,
              attributes.DEFAULT_COHORT_PREFIX, "str",
              "Prefix of cohort span attributes (`plan` becomes `<prefix>plan`).", "app.cohort."),
    Parameter("pseudonymize", "PRODLENS_PSEUDONYMIZE", _parse_bool, "false", "bool",
              "Replace the customer id by a keyed HMAC-SHA256 pseudonym on `enduser.pseudo.id`; "
              "the raw id never reaches a span, metric or baggage.", "true"),
    Parameter("pseudonym_key", "PRODLENS_PSEUDONYM_KEY", _parse_key, "", "secret",
              "HMAC key for pseudonyms, at least 16 characters. Required when "
              "PRODLENS_PSEUDONYMIZE is on.", "change-me-to-32-random-chars....", secret=True),
    Parameter("max_cohort_values", "PRODLENS_MAX_COHORT_VALUES", _int_parser(1), "100", "int",
              "Distinct values per cohort name per process; later new values become `__other__`.",
              "200"),
    Parameter("max_value_length", "PRODLENS_MAX_VALUE_LENGTH", _int_parser(1), "128", "int",
              "Longer customer ids and cohort values are truncated to this many characters.",
              "64"),
    Parameter("max_cohorts", "PRODLENS_MAX_COHORTS", _int_parser(1), "32", "int",
              "Cohort names per identity and per process; further names are dropped.", "16"),
    Parameter("max_open_spans", "PRODLENS_MAX_OPEN_SPANS", _int_parser(16), "20000", "int",
              "Open spans remembered so late `identify()` can tag their ancestors, per scope "
              "(a request) and outside scopes; the oldest are forgotten past it (no leak when "
              "an app never ends a span).", "50000"),
    Parameter("customer_from", "PRODLENS_CUSTOMER_FROM", parse_sources, "user", "sources",
              "Ordered sources of the customer id; the first that yields a value wins. "
              + SOURCE_GRAMMAR + ".", "jwt:sub,header:x-customer-id"),
    Parameter("propagate_to", "PRODLENS_PROPAGATE_TO", _parse_patterns, "", "patterns",
              "Destinations (host as written in the URL, no DNS) that receive identity in the "
              "outgoing `baggage` header. Empty: none. " + PROPAGATE_GRAMMAR + ".",
              "*.internal,10.0.0.0/8"),
    Parameter("celery_propagate", "PRODLENS_CELERY_PROPAGATE", _parse_bool, "true", "bool",
              "Carry identity from `.delay()`/`.apply_async()` to the app's own Celery workers.",
              "false"),
    Parameter("metrics", "PRODLENS_METRICS", _parse_bool, "true", "bool",
              "Record RED metrics by cohort from local root spans (needs an SDK MeterProvider).",
              "false"),
    Parameter("metrics_duration", "PRODLENS_METRICS_DURATION", _parse_bool, "true", "bool",
              "Record the `prodlens.request.duration` histogram (~10 us of SDK work per "
              "request); false keeps the exact request, error and repeat counters.", "false"),
    Parameter("metrics_customers", "PRODLENS_METRICS_CUSTOMERS", _parse_list, "", "list",
              "Customers that get their own metric series (explicit, bounded list).",
              "acme,globex"),
    Parameter("metrics_top_customers", "PRODLENS_METRICS_TOP_CUSTOMERS", _int_parser(0), "0",
              "int", "Opt-in: the K busiest customers get their own series, others `__other__`.",
              "20"),
    Parameter("metrics_max_series", "PRODLENS_METRICS_MAX_SERIES", _int_parser(1), "2000", "int",
              "Budget of distinct attribute sets per instrument; past it points go to an "
              "overflow series.", "5000"),
    Parameter("sample_always", "PRODLENS_SAMPLE_ALWAYS", _parse_watch_list, "", "watch list",
              "Keep every trace of these customers or cohorts (for the `prodlens` sampler).",
              "customer:acme,plan:enterprise"),
    Parameter("sample_ratio", "PRODLENS_SAMPLE_RATIO", _float_parser(0.0, 1.0), "1.0", "float",
              "Ratio of other root traces kept by the `prodlens` sampler.", "0.1"),
    Parameter("sample_always_per_second", "PRODLENS_SAMPLE_ALWAYS_PER_SECOND",
              _float_parser(0.0, None), "100", "float",
              "Budget of forced 'always' decisions per second per process, so forged identity "
              "cannot force full sampling.", "50"),
    Parameter("storms", "PRODLENS_STORMS", _parse_bool, "true", "bool",
              "Tag request roots with `prodlens.repeat_count` and count repeats (part of the "
              "metrics processor: only while PRODLENS_METRICS is on).", "false"),
    Parameter("storm_window_seconds", "PRODLENS_STORM_WINDOW_SECONDS",
              _float_parser(0.001, None), "60", "float",
              "Window for `prodlens.repeat_count`: repeats by one customer on one route.", "30"),
    Parameter("storm_max_keys", "PRODLENS_STORM_MAX_KEYS", _int_parser(1), "100000", "int",
              "Customer-route pairs tracked for refresh storms (LRU); memory is bounded by it.",
              "10000"),
    Parameter("storm_threshold", "PRODLENS_STORM_THRESHOLD", _int_parser(1), "3", "int",
              "A request counts as a repeat in the storm metric when its repeat_count >= this.",
              "5"),
    Parameter("file_path", "PRODLENS_FILE_PATH", _parse_str, "prodlens-spans/spans.jsonl", "path",
              "Where the `prodlens_file` span exporter appends OTLP/JSON lines.",
              "/var/log/app/spans.jsonl"),
    Parameter("file_max_bytes", "PRODLENS_FILE_MAX_BYTES", _int_parser(0), "104857600", "int",
              "The file exporter rotates the file past this size (0: never).", "10485760"),
    Parameter("file_backups", "PRODLENS_FILE_BACKUPS", _int_parser(0), "5", "int",
              "Rotated files kept by the file exporter.", "10"),
)

_BY_FIELD: Final = {p.field: p for p in PARAMETERS}
COHORT_SOURCE_DOC: Final = (
    "Ordered sources of the cohort `<name>` (lower-cased), same grammar as PRODLENS_CUSTOMER_FROM."
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration, immutable. Build it with :func:`load_settings`."""

    enabled: bool = True
    customer_attribute: str = attributes.DEFAULT_CUSTOMER_ATTRIBUTE
    cohort_prefix: str = attributes.DEFAULT_COHORT_PREFIX
    pseudonymize: bool = False
    pseudonym_key: str | None = field(default=None, repr=False)
    max_cohort_values: int = 100
    max_value_length: int = 128
    max_cohorts: int = 32
    max_open_spans: int = 20000
    customer_from: tuple[Source, ...] = (Source("user"),)
    cohort_sources: Mapping[str, tuple[Source, ...]] = field(default_factory=dict)
    propagate_to: tuple[str, ...] = ()
    celery_propagate: bool = True
    metrics: bool = True
    metrics_duration: bool = True
    metrics_customers: tuple[str, ...] = ()
    metrics_top_customers: int = 0
    metrics_max_series: int = 2000
    sample_always: tuple[tuple[str, str], ...] = ()
    sample_ratio: float = 1.0
    sample_always_per_second: float = 100.0
    storms: bool = True
    storm_window_seconds: float = 60.0
    storm_max_keys: int = 100000
    storm_threshold: int = 3
    file_path: str = "prodlens-spans/spans.jsonl"
    file_max_bytes: int = 104857600
    file_backups: int = 5
    #: Where each setting came from: "default", "environment" or "configure()".
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows of (variable, value, origin) for every setting; secrets are masked."""
        rows: list[tuple[str, str, str]] = []
        for param in PARAMETERS:
            value = getattr(self, param.field)
            if param.secret:
                shown = "(set)" if value else "(not set)"
            elif isinstance(value, tuple):
                shown = ",".join(
                    ":".join(v) if isinstance(v, tuple) else str(v) for v in value
                )
            else:
                shown = str(value).lower() if isinstance(value, bool) else str(value)
            rows.append((param.env, shown, self.origins.get(param.field, "default")))
        for name, sources in sorted(self.cohort_sources.items()):
            env = f"PRODLENS_COHORT_{name.upper()}_FROM"
            rows.append((env, ",".join(map(str, sources)),
                         self.origins.get(f"cohort:{name}", "environment")))
        return rows


def _error(param_env: str, raw: object, origin: str, accepted: str) -> ConfigError:
    return ConfigError(f"{param_env}={raw!s} ({origin}) is not valid: expected {accepted}")


def _coerce_override(param: Parameter, value: object) -> str:
    """Turn a typed ``configure()`` argument into the text its parser validates."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        parts = [":".join(v) if isinstance(v, tuple) else str(v) for v in value]
        return ",".join(parts)
    return str(value)


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``), then apply typed overrides.

    Raises:
        ConfigError: a value is malformed; the message names the variable, the value, what is
            accepted and where it came from.

    Example::

        >>> load_settings({"PRODLENS_MAX_COHORT_VALUES": "5"}).max_cohort_values
        5
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for param in PARAMETERS:
        raw = env.get(param.env)
        origin = "from the environment"
        if overrides is not None and overrides.get(param.field) is not None:
            raw = _coerce_override(param, overrides[param.field])
            origin = f"from configure({param.field}=...)"
        if raw is None:
            continue
        try:
            values[param.field] = param.parse(raw)
        except _Invalid as invalid:
            shown = "(hidden)" if param.secret else repr(raw) if raw.strip() != raw or not raw \
                else raw
            raise _error(param.env, shown, origin, invalid.accepted) from None
        origins[param.field] = "configure()" if origin.startswith("from configure") \
            else "environment"

    cohort_sources: dict[str, tuple[Source, ...]] = {}
    for key in sorted(env):
        match = COHORT_SOURCE_RE.match(key)
        if not match:
            continue
        name = match.group(1).lower()
        try:
            sources = parse_sources(env[key])
        except _Invalid as invalid:
            raise _error(key, env[key], "from the environment", invalid.accepted) from None
        if sources:
            cohort_sources[name] = sources
            origins[f"cohort:{name}"] = "environment"
    if overrides is not None and overrides.get("cohort_sources") is not None:
        given = overrides["cohort_sources"]
        assert isinstance(given, Mapping)
        for name, spec in given.items():
            key = f"PRODLENS_COHORT_{str(name).upper()}_FROM"
            if not COHORT_NAME_RE.match(str(name)):
                raise _error(key, spec, "from configure(cohort_sources=...)",
                             "a cohort name of lowercase letters, digits, '_' and '.'")
            try:
                cohort_sources[str(name)] = parse_sources(str(spec))
            except _Invalid as invalid:
                raise _error(key, spec, "from configure(cohort_sources=...)",
                             invalid.accepted) from None
            origins[f"cohort:{name}"] = "configure()"
    values["cohort_sources"] = cohort_sources

    settings = Settings(**values, origins=origins)
    if settings.pseudonymize and not settings.pseudonym_key:
        raise ConfigError(
            "PRODLENS_PSEUDONYMIZE=true (" + origins.get("pseudonymize", "default")
            + ") is not valid without a key: expected PRODLENS_PSEUDONYM_KEY set to a secret of "
            "at least 16 characters"
        )
    return settings


def reference_markdown() -> str:
    """The configuration reference table (docs/configuration.md is generated from it)."""
    lines = [
        "| Variable | Type | Default | Example | Meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for param in PARAMETERS:
        default = f"`{param.default}`" if param.default else "(empty)"
        lines.append(
            f"| `{param.env}` | {param.type} | {default} | `{param.example}` | {param.doc} |"
        )
    lines.append(
        "| `PRODLENS_COHORT_<NAME>_FROM` | sources | (none) | `jwt:plan,header:x-plan` | "
        + COHORT_SOURCE_DOC + " |"
    )
    return "\n".join(lines) + "\n"


def settings_fields() -> list[str]:
    """Names of the :class:`Settings` fields (for docs and tests)."""
    return [f.name for f in fields(Settings) if f.name != "origins"]

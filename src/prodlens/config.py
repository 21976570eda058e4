"""Settings: one typed table of parameters, read from the environment into a frozen object.

Every ``PRODLENS_*`` variable is a field of :class:`Settings`: its typed default is the field's
default, and its variable, parser, documentation and example are the field's metadata. The
configuration reference (``docs/configuration.md``, ``prodlens config --markdown``) is generated
from that one table, so a default can only be written once. Cohort sources form one family of
variables, ``PRODLENS_COHORT_<NAME>_FROM``.

Two ways to read it, as OpenTelemetry's SDK reads its own variables:

- :func:`load_settings` (``prodlens.configure()`` in code): any bad value raises one
  :class:`ConfigError` listing every problem.
- :func:`read_environment` (zero-code, ``opentelemetry-instrument``): every bad value is
  reported, that setting keeps its default and the rest of prodlens stays active; unknown
  ``PRODLENS_*`` variables are reported with the closest valid name.

Example::

    export PRODLENS_CUSTOMER_FROM=jwt:sub,header:x-customer-id
    export PRODLENS_COHORT_PLAN_FROM=jwt:plan
    export PRODLENS_MAX_COHORT_VALUES=200
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Final

from prodlens import attributes
from prodlens._grammar import (
    COHORT_NAME_GRAMMAR,
    PROPAGATE_GRAMMAR,
    SOURCE_GRAMMAR,
    Invalid,
    Source,
    parse_patterns,
    parse_sources,
    parse_watch_list,
    split_list,
    valid_cohort_name,
)

__all__ = [
    "PARAMETERS",
    "ConfigError",
    "Parameter",
    "Problem",
    "Settings",
    "Source",
    "load_settings",
    "read_environment",
]

ENV_PREFIX: Final = "PRODLENS_"
COHORT_SOURCE_RE: Final = re.compile(r"^PRODLENS_COHORT_([A-Z0-9_.]+)_FROM$")
#: Variables under these prefixes belong to tools around the in-app library, not to its
#: settings: the notification targets of ``prodlens watch`` and ``prodlens notify`` (read by
#: ``prodlens.incidents`` and ``prodlens.alerting``) and the CI's end-to-end test. They are never
#: reported as unknown.
FOREIGN_PREFIXES: Final = ("PRODLENS_NOTIFY_", "PRODLENS_E2E_")
#: The integrations ``ProdlensInstrumentor`` can patch, by the name
#: ``PRODLENS_DISABLED_INTEGRATIONS`` uses (each is ``prodlens.integrations.<name>``).
INTEGRATION_NAMES: Final = (
    "flask", "django", "outbound", "asgi", "starlette", "celery", "openfeature",
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


# --------------------------------------------------------------------------- value parsers

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise Invalid("one of true, false, 1, 0, yes, no, on, off")


def _int_parser(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise Invalid(f"a whole number >= {minimum}") from None
        if value < minimum:
            raise Invalid(f"a whole number >= {minimum}")
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
            raise Invalid(accepted) from None
        if value != value or value < minimum or (maximum is not None and value > maximum):
            raise Invalid(accepted)
        return value

    return parse


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_attribute_name(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 255 or any(ch.isspace() for ch in value):
        raise Invalid("a non-empty attribute name without spaces, at most 255 characters")
    return value


def _parse_key(raw: str) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if len(value) < 16:
        raise Invalid("a secret of at least 16 characters")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(split_list(raw))


def _parse_integrations(raw: str) -> tuple[str, ...]:
    names = tuple(item.lower() for item in split_list(raw))
    unknown = [name for name in names if name not in INTEGRATION_NAMES]
    if unknown:
        raise Invalid("a comma-separated list of " + ", ".join(INTEGRATION_NAMES)
                      + f" ({unknown[0]!r} is none of them)")
    return names


def format_value(value: object) -> str:
    """The text of a typed setting value, as a variable would spell it (the inverse of the
    parsers: parsing the text gives the value back)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, tuple):
        return ",".join(":".join(v) if isinstance(v, tuple) else str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class Parameter:
    """One row of the settings table: a field of :class:`Settings` and its variable.

    ``value`` is the typed default (the field's default); ``default`` is its text as the
    reference shows it and a variable would spell it.
    """

    field: str
    env: str
    parse: Callable[[str], Any]
    default: str
    type: str
    doc: str
    example: str
    secret: bool = False
    value: Any = None
    #: An unusable value switches prodlens off instead of falling back to the default:
    #: pseudonymisation asked for and not possible must never tag raw ids instead.
    privacy: bool = False


def _setting(default: Any, env: str, parse: Callable[[str], Any], type_: str, doc: str,
             example: str, *, secret: bool = False, privacy: bool = False) -> Any:
    """A :class:`Settings` field whose metadata is its row of the table."""
    row = Parameter("", env, parse, format_value(default), type_, doc, example, secret,
                    default, privacy)
    return field(default=default, repr=not secret, metadata={"parameter": row})


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration, immutable: each field is one ``PRODLENS_*`` variable.

    Build it with :func:`load_settings` or :func:`read_environment`; ``Settings()`` holds
    every default.
    """

    enabled: bool = _setting(
        True, "PRODLENS_ENABLED", _parse_bool, "bool",
        "Master switch. Off: no span, metric or header is touched.", "false")
    customer_attribute: str = _setting(
        attributes.DEFAULT_CUSTOMER_ATTRIBUTE, "PRODLENS_CUSTOMER_ATTRIBUTE",
        _parse_attribute_name, "str", "Span attribute that carries the customer id.",
        "app.customer.id")
    cohort_prefix: str = _setting(
        attributes.DEFAULT_COHORT_PREFIX, "PRODLENS_COHORT_PREFIX", _parse_str, "str",
        "Prefix of cohort span attributes (`plan` becomes `<prefix>plan`).", "app.cohort.")
    pseudonymize: bool = _setting(
        False, "PRODLENS_PSEUDONYMIZE", _parse_bool, "bool",
        "Replace the customer id by a keyed HMAC-SHA256 pseudonym on `enduser.pseudo.id`; the "
        "raw id never reaches a span, metric or baggage. An unusable value or key switches "
        "prodlens off rather than tag raw ids.", "true", privacy=True)
    pseudonym_key: str | None = _setting(
        None, "PRODLENS_PSEUDONYM_KEY", _parse_key, "secret",
        "HMAC key for pseudonyms, at least 16 characters. Required when PRODLENS_PSEUDONYMIZE "
        "is on.", "change-me-to-32-random-chars....", secret=True, privacy=True)
    max_cohort_values: int = _setting(
        100, "PRODLENS_MAX_COHORT_VALUES", _int_parser(1), "int",
        "Distinct values per cohort name per process; later new values become `__other__`.",
        "200")
    max_value_length: int = _setting(
        128, "PRODLENS_MAX_VALUE_LENGTH", _int_parser(1), "int",
        "Longer customer ids and cohort values are truncated to this many characters.", "64")
    max_cohorts: int = _setting(
        32, "PRODLENS_MAX_COHORTS", _int_parser(1), "int",
        "Cohort names per identity and per process; further names are dropped.", "16")
    max_open_spans: int = _setting(
        20000, "PRODLENS_MAX_OPEN_SPANS", _int_parser(16), "int",
        "Open spans remembered so late `identify()` can tag their ancestors, per scope (a "
        "request) and outside scopes; the oldest are forgotten past it (no leak when an app "
        "never ends a span).", "50000")
    customer_from: tuple[Source, ...] = _setting(
        (Source("user"),), "PRODLENS_CUSTOMER_FROM", parse_sources, "sources",
        "Ordered sources of the customer id; the first that yields a value wins. "
        + SOURCE_GRAMMAR + ".", "jwt:sub,header:x-customer-id")
    propagate_to: tuple[str, ...] = _setting(
        (), "PRODLENS_PROPAGATE_TO", parse_patterns, "patterns",
        "Destinations (host as written in the URL, no DNS) that receive identity in the "
        "outgoing `baggage` header. Empty: none. " + PROPAGATE_GRAMMAR + ".",
        "*.internal,10.0.0.0/8")
    celery_propagate: bool = _setting(
        True, "PRODLENS_CELERY_PROPAGATE", _parse_bool, "bool",
        "Carry identity from `.delay()`/`.apply_async()` to the app's own Celery workers.",
        "false")
    disabled_integrations: tuple[str, ...] = _setting(
        (), "PRODLENS_DISABLED_INTEGRATIONS", _parse_integrations, "list",
        "Integrations `opentelemetry-instrument` leaves alone, among "
        + ", ".join(INTEGRATION_NAMES) + ".", "celery,openfeature")
    direct_stamp: bool = _setting(
        True, "PRODLENS_DIRECT_STAMP", _parse_bool, "bool",
        "Write identity into a span's attribute dict directly where a start-up probe shows the "
        "SDK gives the same result (faster); false: always `Span.set_attributes`.", "false")
    metrics: bool = _setting(
        True, "PRODLENS_METRICS", _parse_bool, "bool",
        "Record RED metrics by cohort from local root spans (needs an SDK MeterProvider).",
        "false")
    metrics_duration: bool = _setting(
        True, "PRODLENS_METRICS_DURATION", _parse_bool, "bool",
        "Record the `prodlens.request.duration` histogram (~10 us of SDK work per request); "
        "false keeps the exact request, error and repeat counters.", "false")
    metrics_customers: tuple[str, ...] = _setting(
        (), "PRODLENS_METRICS_CUSTOMERS", _parse_list, "list",
        "Customers that get their own metric series (explicit, bounded list).", "acme,globex")
    metrics_top_customers: int = _setting(
        0, "PRODLENS_METRICS_TOP_CUSTOMERS", _int_parser(0), "int",
        "Opt-in: the K busiest customers get their own series, others `__other__`.", "20")
    metrics_max_series: int = _setting(
        2000, "PRODLENS_METRICS_MAX_SERIES", _int_parser(1), "int",
        "Budget of distinct attribute sets per instrument; past it points go to an overflow "
        "series.", "5000")
    sample_always: tuple[tuple[str, str], ...] = _setting(
        (), "PRODLENS_SAMPLE_ALWAYS", parse_watch_list, "watch list",
        "Keep every trace of these customers or cohorts (for the `prodlens` sampler).",
        "customer:acme,plan:enterprise")
    sample_ratio: float = _setting(
        1.0, "PRODLENS_SAMPLE_RATIO", _float_parser(0.0, 1.0), "float",
        "Ratio of other root traces kept by the `prodlens` sampler.", "0.1")
    sample_always_per_second: float = _setting(
        100.0, "PRODLENS_SAMPLE_ALWAYS_PER_SECOND", _float_parser(0.0, None), "float",
        "Budget of forced 'always' decisions per second per process, so forged identity cannot "
        "force full sampling.", "50")
    storms: bool = _setting(
        True, "PRODLENS_STORMS", _parse_bool, "bool",
        "Tag request roots with `prodlens.repeat_count` and count repeats (part of the metrics "
        "processor: only while PRODLENS_METRICS is on).", "false")
    storm_window_seconds: float = _setting(
        60.0, "PRODLENS_STORM_WINDOW_SECONDS", _float_parser(0.001, None), "float",
        "Window for `prodlens.repeat_count`: repeats by one customer on one route.", "30")
    storm_max_keys: int = _setting(
        100000, "PRODLENS_STORM_MAX_KEYS", _int_parser(1), "int",
        "Customer-route pairs tracked for refresh storms (LRU); memory is bounded by it.",
        "10000")
    storm_threshold: int = _setting(
        3, "PRODLENS_STORM_THRESHOLD", _int_parser(1), "int",
        "A request counts as a repeat in the storm metric when its repeat_count >= this.", "5")
    file_path: str = _setting(
        "prodlens-spans/spans.jsonl", "PRODLENS_FILE_PATH", _parse_str, "path",
        "Where the `prodlens_file` span exporter appends OTLP/JSON lines.",
        "/var/log/app/spans.jsonl")
    file_max_bytes: int = _setting(
        104857600, "PRODLENS_FILE_MAX_BYTES", _int_parser(0), "int",
        "The file exporter rotates the file past this size (0: never).", "10485760")
    file_backups: int = _setting(
        5, "PRODLENS_FILE_BACKUPS", _int_parser(0), "int",
        "Rotated files kept by the file exporter.", "10")
    #: Cohort name -> its sources, from the ``PRODLENS_COHORT_<NAME>_FROM`` family.
    cohort_sources: Mapping[str, tuple[Source, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    #: Where each setting came from: "default", "environment" or "configure()".
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> list[tuple[str, str, str]]:
        """Rows of (variable, value, origin) for every setting; secrets are masked."""
        rows: list[tuple[str, str, str]] = []
        for param in PARAMETERS:
            value = getattr(self, param.field)
            shown = ("(set)" if value else "(not set)") if param.secret else format_value(value)
            rows.append((param.env, shown, self.origins.get(param.field, "default")))
        for name, sources in sorted(self.cohort_sources.items()):
            rows.append((cohort_variable(name), ",".join(map(str, sources)),
                         self.origins.get(f"cohort:{name}", "environment")))
        return rows


#: The table, in field order: each row's field name and typed default come from Settings.
PARAMETERS: Final[tuple[Parameter, ...]] = tuple(
    replace(f.metadata["parameter"], field=f.name)
    for f in fields(Settings) if "parameter" in f.metadata
)
_BY_ENV: Final = {p.env: p for p in PARAMETERS}
COHORT_SOURCE_DOC: Final = (
    "Ordered sources of the cohort `<name>` (lower-cased), same grammar as PRODLENS_CUSTOMER_FROM."
)


def cohort_variable(name: str) -> str:
    """The variable of cohort ``name``'s sources, e.g. ``PRODLENS_COHORT_PLAN_FROM``."""
    return f"PRODLENS_COHORT_{name.upper()}_FROM"


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration, as the user should read it."""

    variable: str
    message: str
    #: True for a variable prodlens does not know (a warning), False for a bad value.
    unknown: bool = False

    def __str__(self) -> str:
        return self.message


def _shown(param: Parameter | None, raw: str) -> str:
    if param is not None and param.secret:
        return "(hidden)"
    return repr(raw) if raw.strip() != raw or not raw else raw


def _invalid(variable: str, shown: str, origin: str, accepted: str) -> Problem:
    return Problem(variable, f"{variable}={shown} ({origin}) is not valid: expected {accepted}")


def _coerce_override(value: object) -> str:
    """Turn a typed ``configure()`` argument into the text its parser validates."""
    if isinstance(value, (list, tuple)):
        return ",".join(":".join(v) if isinstance(v, tuple) else str(v) for v in value)
    return format_value(value)


def _suggestion(variable: str) -> str | None:
    """The valid variable closest to an unknown ``PRODLENS_*`` one, or None."""
    upper = variable.upper()
    if upper.startswith("PRODLENS_COHORT_") and upper not in _BY_ENV:
        middle = upper[len("PRODLENS_COHORT_"):]
        middle = middle[:-len("_FROM")] if middle.endswith("_FROM") else middle
        if middle and valid_cohort_name(middle.lower()):
            return cohort_variable(middle.lower())
    close = difflib.get_close_matches(upper, list(_BY_ENV), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown(variable: str) -> Problem:
    suggestion = _suggestion(variable)
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    return Problem(variable, f"{variable} is not a prodlens setting and is ignored{hint}",
                   unknown=True)


def _read(
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, object] | None,
) -> tuple[Settings, list[Problem]]:
    """Every setting that parses, and every problem (unknown variables included)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    problems: list[Problem] = []
    privacy_broken = False
    for param in PARAMETERS:
        raw = env.get(param.env)
        origin = "from the environment"
        if overrides is not None and overrides.get(param.field) is not None:
            raw = _coerce_override(overrides[param.field])
            origin = f"from configure({param.field}=...)"
        if raw is None:
            continue
        try:
            values[param.field] = param.parse(raw)
        except Invalid as invalid:
            problems.append(_invalid(param.env, _shown(param, raw), origin, invalid.accepted))
            privacy_broken = privacy_broken or param.privacy
            continue
        origins[param.field] = "configure()" if origin.startswith("from configure") \
            else "environment"

    cohort_sources: dict[str, tuple[Source, ...]] = {}
    for key in sorted(env):
        if not key.startswith(ENV_PREFIX):
            continue
        match = COHORT_SOURCE_RE.match(key)
        if match is None or not valid_cohort_name(match.group(1).lower()):
            if key not in _BY_ENV and not key.startswith(FOREIGN_PREFIXES):
                problems.append(_unknown(key))
            continue
        name = match.group(1).lower()
        try:
            sources = parse_sources(env[key])
        except Invalid as invalid:
            problems.append(_invalid(key, _shown(None, env[key]), "from the environment",
                                     invalid.accepted))
            continue
        if sources:
            cohort_sources[name] = sources
            origins[f"cohort:{name}"] = "environment"
    given = overrides.get("cohort_sources") if overrides is not None else None
    if given is not None:
        assert isinstance(given, Mapping)
        for name, spec in given.items():
            key = cohort_variable(str(name))
            origin = "from configure(cohort_sources=...)"
            if not valid_cohort_name(name):
                problems.append(_invalid(key, str(spec), origin, COHORT_NAME_GRAMMAR))
                continue
            try:
                cohort_sources[name] = parse_sources(str(spec))
            except Invalid as invalid:
                problems.append(_invalid(key, str(spec), origin, invalid.accepted))
                continue
            origins[f"cohort:{name}"] = "configure()"
    values["cohort_sources"] = MappingProxyType(cohort_sources)

    settings = Settings(**values, origins=origins)
    if settings.pseudonymize and not settings.pseudonym_key and not privacy_broken:
        problems.append(Problem(
            "PRODLENS_PSEUDONYMIZE",
            "PRODLENS_PSEUDONYMIZE=true (" + origins.get("pseudonymize", "default")
            + ") is not valid without a key: expected PRODLENS_PSEUDONYM_KEY set to a secret of "
            "at least 16 characters"))
        privacy_broken = True
    if privacy_broken:
        # Pseudonymisation was asked for and cannot be done: tagging raw ids instead would
        # break the promise it makes, so prodlens stays off.
        settings = replace(settings, enabled=False, pseudonymize=False, pseudonym_key=None)
    return settings, problems


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``), then apply typed overrides.

    Raises:
        ConfigError: a value is malformed; the message names every bad variable, its value,
            what is accepted and where it came from. Unknown variables are not errors here
            (see :func:`read_environment`).

    Example::

        >>> load_settings({"PRODLENS_MAX_COHORT_VALUES": "5"}).max_cohort_values
        5
    """
    settings, problems = _read(environ, overrides)
    errors = [str(p) for p in problems if not p.unknown]
    if errors:
        raise ConfigError("; ".join(errors))
    return settings


def read_environment(
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[Problem]]:
    """Settings for zero-code use: never raises.

    Every invalid value is a :class:`Problem` (naming the variable, the value and what is
    accepted) and that setting keeps its default, as OpenTelemetry's SDK treats its own
    variables; an unusable pseudonymisation setting switches prodlens off instead (raw ids
    must not be tagged when pseudonyms were asked for). Unknown ``PRODLENS_*`` variables are
    problems too, each naming the closest valid variable.

    Example::

        >>> settings, problems = read_environment({"PRODLENS_MAX_COHORT_VALUES": "-1",
        ...                                        "PRODLENS_CUSTMER_FROM": "jwt:sub"})
        >>> settings.max_cohort_values, [p.variable for p in problems]
        (100, ['PRODLENS_MAX_COHORT_VALUES', 'PRODLENS_CUSTMER_FROM'])
    """
    return _read(environ, None)


#: The variables the README's short table shows (generated like the full reference).
README_VARIABLES: Final = (
    "PRODLENS_CUSTOMER_FROM", "PRODLENS_CUSTOMER_ATTRIBUTE", "PRODLENS_COHORT_PREFIX",
    "PRODLENS_PSEUDONYMIZE", "PRODLENS_MAX_COHORT_VALUES", "PRODLENS_MAX_VALUE_LENGTH",
    "PRODLENS_PROPAGATE_TO", "PRODLENS_METRICS", "PRODLENS_SAMPLE_ALWAYS",
    "PRODLENS_DISABLED_INTEGRATIONS", "PRODLENS_ENABLED",
)


def short_reference_markdown() -> str:
    """The README's table of the most used variables: variable, default, example."""
    lines = ["| Variable | Default | Example |", "| --- | --- | --- |"]
    for env in README_VARIABLES:
        param = _BY_ENV[env]
        default = f"`{param.default}`" if param.default else "(empty)"
        lines.append(f"| `{env}` | {default} | `{param.example}` |")
    lines.append("| `PRODLENS_COHORT_<NAME>_FROM` | (none) | `jwt:plan,header:x-plan` |")
    return "\n".join(lines) + "\n"


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

"""The typed (msgspec) decoding reads every spelling the dict-based engine read, the same way.

The engine decodes each line into Structs that declare only the fields it reads, with leaves
typed loosely and attributes kept raw. These tests hold it to the old behaviour: OTLP/JSON
spelled differently gives the canonical report; attribute values turn into exactly the text
``value_text`` gives; broken lines are reported with the old reasons; and the extra is still
imported lazily.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodlens.analysis import (
    Filters,
    SliceOptions,
    affected_customers,
    slice_failures,
)
from prodlens.analysis._otlp import Attributes, decoder
from prodlens.analysis._values import attribute_map
from prodlens.analysis.synthetic import SyntheticTraces

KINDS = {0: "SPAN_KIND_UNSPECIFIED", 1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER",
         3: "SPAN_KIND_CLIENT", 4: "SPAN_KIND_PRODUCER", 5: "SPAN_KIND_CONSUMER"}
CODES = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def respell(span: dict[str, Any], number: int) -> dict[str, Any]:
    """The same span as other writers spell it: enum names, numbers, nulls, extra fields."""
    out = dict(reversed(list(span.items())))  # field order does not matter
    out["kind"] = KINDS[span["kind"]]
    out["startTimeUnixNano"] = int(span["startTimeUnixNano"])
    status = span.get("status") or {}
    if "code" in status:
        out["status"] = {"message": "boom", "code": CODES[status["code"]]}
    else:
        out["status"] = [None, {}, {"code": "STATUS_CODE_UNSET"}][number % 3]
        if number % 7 == 0:
            del out["status"]
    if not span.get("parentSpanId"):
        out["parentSpanId"] = [None, ""][number % 2]
    if not span.get("attributes"):
        out["attributes"] = None
    out["droppedAttributesCount"] = 0
    out["events"] = [{"name": "e", "attributes": [{"key": "k", "value": {"intValue": 10**30}}]}]
    out["x.unknown"] = {"nested": [1, 2.5, None, "\u00e9"]}
    return out


def respell_file(source: Path, target: Path) -> None:
    lines = []
    for line in source.read_text().splitlines():
        request = json.loads(line)
        for resource_spans in request["resourceSpans"]:
            resource_spans["schemaUrl"] = ""
            for scope_spans in resource_spans["scopeSpans"]:
                scope_spans["spans"] = [respell(span, number)
                                        for number, span in enumerate(scope_spans["spans"])]
        lines.append(json.dumps(request, separators=(" , ", " : "), ensure_ascii=True))
    target.write_text("\r\n".join(lines) + "\r\n")


OPTIONS = {
    "root": SliceOptions(),
    "span": SliceOptions(unit="span"),
    "trace": SliceOptions(unit="trace", max_open_groups=10**6),
    # an intValue attribute, compared as its text; != keeps units without the attribute
    "where-int": SliceOptions(filters=Filters(where=(("http.response.status_code", "404",
                                                      False),))),
}


@pytest.mark.parametrize("unit", list(OPTIONS))
def test_other_spellings_give_the_canonical_report(
        planted: SyntheticTraces, tmp_path: Path, unit: str) -> None:
    for path in planted.paths:
        respell_file(path, tmp_path / path.name)
    options = OPTIONS[unit]
    canonical = slice_failures(list(planted.paths), options)
    respelled = slice_failures([tmp_path], options)
    assert respelled.input.malformed == 0
    assert (respelled.units, respelled.failures, respelled.input.spans) == (
        canonical.units, canonical.failures, canonical.input.spans)
    assert respelled.findings == canonical.findings
    assert respelled.findings
    assert (affected_customers([tmp_path], options).customers
            == affected_customers(list(planted.paths), options).customers)


def line(spans: Any, *, resource: Any = None) -> str:
    resource = resource if resource is not None else {
        "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    return json.dumps({"resourceSpans": [{"resource": resource,
                                          "scopeSpans": [{"spans": spans}]}]})


def root(number: int, *, error: bool = False, attributes: Any = None) -> dict[str, Any]:
    return {"traceId": f"{number:032x}", "spanId": f"{number:016x}", "name": "GET /x",
            "kind": 2, "startTimeUnixNano": "1790000000000000000",
            "status": {"code": 2} if error else {}, "attributes": attributes}


def test_spans_that_are_not_a_list_are_malformed_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join([
        line({"0": root(1)}),
        line([root(2)]),
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [root(3), 5]}]}]}),
    ]) + "\n")
    report = slice_failures([path])
    assert report.input.malformed_examples == (
        f"{path}:1: not an OTLP trace request (ValidationError: Expected `array | null`, got `object`"
        " - at `$.resourceSpans[0].scopeSpans[0].spans`)",
        f"{path}:3: not an OTLP trace request (ValidationError: Expected `object`, got `int`"
        " - at `$.resourceSpans[0].scopeSpans[0].spans[1]`)",
    )
    assert report.units == 1


def test_malformed_lines_keep_their_reasons(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([
        b'{"resourceSpans": null}',
        b'{"resourceSpans": {}}',
        b"[]",
        b'"text"',
        b'{"resourceSpans": [1]}',
        b'{"resourceSpans": [], "x": NaN}',
        b'{"resourceSpans": [{"scopeSpans": {}}], "x": "\xff"}',  # invalid UTF-8: not JSON
        # the decoder skips a root's attributes; reading them finds that the line is not JSON
        line([root(1, attributes=[{"key": "k", "value": {"doubleValue": "INF"}}])]
             ).replace('"INF"', "1e400").encode(),
        b'{"resourceSpans": [{"scopeSpans": {}',  # cut short, after a shape error
    ]))
    examples = slice_failures([path]).input.malformed_examples
    assert [example.split(": ", 1)[1] for example in examples[:4]] == [
        "no resourceSpans list"] * 4
    assert examples[4] == (f"{path}:5: not an OTLP trace request (ValidationError: Expected "
                           "`object`, got `int` - at `$.resourceSpans[0]`)")
    assert examples[5].startswith(f"{path}:6: not JSON (")
    assert examples[6].startswith(f"{path}:7: not JSON (str is not valid UTF-8")
    assert examples[7].startswith(f"{path}:8: not JSON (number is infinity when parsed as")
    assert examples[8] == f"{path}:9: truncated line"


def test_nesting_past_the_depth_limit_is_not_json_as_before(tmp_path: Path) -> None:
    # msgspec raises RecursionError where orjson says "depth limit exceeded": still not JSON.
    # msgspec's guard follows the interpreter's C recursion limit, which Python 3.13 raised:
    # there it decodes line 1, whose nested attributes (a child span's) are never read, so
    # only line 2, whose root attributes are read (by orjson, past its depth limit), is bad.
    deep = "[" * 2000 + "]" * 2000
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([
        line([{**root(1), "parentSpanId": "ab", "kind": 1, "attributes": "DEEP"}]),
        line([root(2, attributes=[{"key": "k", "value": {"arrayValue": "DEEP"}}])]),
        line([root(3)]),
    ]).replace('"DEEP"', deep) + "\n")
    report = slice_failures([path])
    bad_lines = [1, 2] if sys.version_info < (3, 13) else [2]
    assert [(example.split(": ", 1)[0].rsplit(":", 1)[1], example.split(": ", 1)[1][:40])
            for example in report.input.malformed_examples] == [
        (str(n), "not JSON (depth limit exceeded: line 1 c") for n in bad_lines]
    assert report.units == 1


def test_nulls_read_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "nulls.jsonl"
    path.write_text("\n".join([
        json.dumps({"resourceSpans": [{"resource": None, "scopeSpans": None}]}),
        json.dumps({"resourceSpans": [{"resource": {"attributes": None},
                                       "scopeSpans": [{"spans": None}, {"spans": [root(1)]}]}]}),
        line([{**root(2, error=True), "parentSpanId": None, "flags": None, "kind": None}]),
        line([{**root(3), "traceId": None}]),  # a null id is an id, as it always was
        line([{"parentSpanId": "ab", "kind": 1, "name": "no trace id, not a root"}]),
    ]) + "\n")
    report = slice_failures([path])
    assert report.input.malformed == 0
    assert (report.units, report.failures, report.input.spans) == (3, 1, 4)


NO_VALUE = object()
#: Attribute values as writers spell them, canonical or not (NO_VALUE: the key alone).
VALUES: list[Any] = [
    {"stringValue": "x"}, {"stringValue": ""}, {"stringValue": "\u00e9\U0001f600"},
    {"stringValue": None}, {"intValue": "42"}, {"intValue": " 7"}, {"intValue": 42},
    {"intValue": -(2**63)}, {"intValue": 2**63}, {"intValue": 2**64 - 1}, {"intValue": 2**64},
    {"intValue": 10**30}, {"intValue": 1.0}, {"boolValue": True}, {"boolValue": False},
    {"boolValue": 1}, {"doubleValue": 1}, {"doubleValue": 0.1}, {"doubleValue": 1e300},
    {"doubleValue": -0.0}, {"doubleValue": 10**30}, {"doubleValue": "NaN"},
    {"doubleValue": "Infinity"}, {"doubleValue": "-Infinity"}, {"doubleValue": "2.5"},
    {"bytesValue": "aGVsbG8="}, {"bytesValue": ""},
    {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}, {"doubleValue": 1},
                               {"doubleValue": 1.5}, {"boolValue": True}, {"arrayValue": {}},
                               {"intValue": 10**30}, {}]}},
    {"arrayValue": None}, {"arrayValue": {}},
    {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}, {"key": "c"},
                                {"key": "d", "value": {"doubleValue": 10**30}}]}},
    {"kvlistValue": None}, {}, None, NO_VALUE, [], "x", 5, {"foo": 1}, {"stringValue": "x", "intValue": "1"},
    {"intValue": "1", "foo": 2}, {"stringValue": "x", "stringValue2": None},
]


def dumps(value: Any) -> bytes:
    """JSON text (``json``: unlike orjson, it writes integers past 64 bits)."""
    return json.dumps(value).encode()


def decoded_attributes(raw_attributes: bytes) -> Any:
    """A root's attributes as the engine gets them: decoded line, then its raw attributes."""
    text = (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"a","attributes":'
            + raw_attributes + b"}]}]}]}")
    span = decoder().decode(text).resourceSpans[0].scopeSpans[0].spans[0]  # type: ignore[index]
    return Attributes().span(span.attributes)


def outcome(function: Any) -> Any:
    """The texts, or "malformed" for an error the engine reports as a malformed line."""
    try:
        return function()
    except (KeyError, TypeError, AttributeError, ValueError):
        return "malformed"


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:40] for v in VALUES])
def test_attribute_values_turn_into_the_same_text(value: Any) -> None:
    first = {"key": "k"} if value is NO_VALUE else {"key": "k", "value": value}
    raw = dumps([first, {"key": "s", "value": {"stringValue": "v"}}])
    old = outcome(lambda: attribute_map(orjson.loads(raw)))
    assert outcome(lambda: Attributes.texts(decoded_attributes(raw))) == old
    if old != "malformed":
        assert all(isinstance(text, str) for text in old.values())


def test_non_string_values_of_roots_reach_the_report_as_value_text(tmp_path: Path) -> None:
    # The cohort values of affected customers are texts of the roots' own attribute values.
    values = [{"intValue": "3"}, {"intValue": 10**30}, {"doubleValue": 0.5},
              {"boolValue": True}, {"arrayValue": {"values": [{"intValue": "1"}]}},
              {"kvlistValue": {"values": [{"key": "a", "value": {"doubleValue": 2}}]}}]
    spans = [root(n, error=True, attributes=[
        {"key": "enduser.id", "value": {"stringValue": f"c{n}"}},
        {"key": "prodlens.cohort.x", "value": value}]) for n, value in enumerate(values)]
    (tmp_path / "spans.jsonl").write_text(line(spans) + "\n")
    cohorts = {c.customer: c.cohorts["prodlens.cohort.x"]
               for c in affected_customers([tmp_path]).customers}
    assert cohorts == {f"c{n}": (attribute_map(orjson.loads(dumps(
        [{"key": "k", "value": v}])))["k"],) for n, v in enumerate(values)}
    assert cohorts["c0"] == ("3",)
    assert cohorts["c1"] == ("1000000000000000019884624838656",)  # orjson's float, as before
    assert cohorts["c4"] == ("[1]",)


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1.5", " 3", "aGk=", "x y"]),
)
any_value = st.recursive(
    st.dictionaries(st.sampled_from(["stringValue", "intValue", "boolValue", "doubleValue",
                                     "bytesValue", "other"]), json_leaf, max_size=2),
    lambda inner: st.one_of(
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
        st.builds(lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v}
                                                          for k, v in kvs]}},
                  st.lists(st.tuples(st.text(max_size=3), inner), max_size=3)),
        st.builds(lambda v: {"arrayValue": v}, json_leaf),
    ),
    max_leaves=6,
)
key_value = st.one_of(
    st.builds(lambda k, v: {"key": k, "value": v}, st.text(max_size=5), any_value),
    st.builds(lambda k: {"key": k}, st.one_of(st.text(max_size=3), st.integers())),
    st.builds(lambda v: {"value": v}, any_value),
    json_leaf,
)


@settings(max_examples=400, deadline=None)
@given(attributes=st.one_of(st.lists(key_value, max_size=4), json_leaf,
                            st.dictionaries(st.text(max_size=3), json_leaf, max_size=2)))
def test_any_attributes_read_as_the_dict_based_engine_read_them(attributes: Any) -> None:
    raw = dumps(attributes)
    old = outcome(lambda: attribute_map(orjson.loads(raw) or ()))
    new = outcome(lambda: Attributes.texts(decoded_attributes(raw)))
    assert new == old


def test_the_extra_is_imported_only_to_read_files(tmp_path: Path) -> None:
    code = ("import sys\n"
            "import prodlens, prodlens.analysis, prodlens.analysis.commands\n"
            "from prodlens.cli import build_parser\n"
            "build_parser().format_help()\n"
            "assert 'msgspec' not in sys.modules and 'orjson' not in sys.modules\n"
            "from prodlens.analysis import slice_failures\n"
            f"slice_failures([{str(tmp_path)!r}])\n"
            "assert 'msgspec' in sys.modules and 'orjson' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr

"""The shell commands in README.md, docs/ and examples/ work as written from a clone.

Every ```bash block is read as a reader would type it: from the repository root, following its
``cd`` lines. The cheap commands run for real (``pip install`` lines as dry runs, ``--help``,
``--version``, ``prodlens config``, the README's ``slice``/``affected`` over spans written by the
file exporter's defaults); the rest are checked for what made them fail before: an install line
that is not the checkout's, an extra that does not exist, an OTLP exporter that is not installed,
a missing service name. The examples' run scripts run in tests/integrations (test_fastapi.py,
test_celery.py, test_zero_code.py); the examples are started as their READMEs say in
test_examples_as_documented.py, the README's zero-code block in
tests/integrations/test_zero_code.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, entry_points, metadata, version
from pathlib import Path

import pytest
from doc_commands import BASH, COMMANDS, ROOT, Command, assignments

BIN = Path(sys.executable).parent
EXTRAS = set(metadata("prodlens").get_all("Provides-Extra") or ())
PIP_INSTALLS = [c for c in COMMANDS if c.words[:2] == ("pip", "install")]


def _requirements(command: Command) -> list[str]:
    return [w for w in command.words[2:] if not w.startswith("-")]


def test_the_pages_have_install_lines() -> None:
    """The parser finds what it checks (a regex that silently matched nothing passes all)."""
    pages = {c.page for c in PIP_INSTALLS}
    assert {"README.md", "docs/getting-started.md", "docs/integrations/flask.md",
            "examples/flask/README.md", "examples/celery/README.md"} <= pages
    assert len(PIP_INSTALLS) >= 15


@pytest.mark.parametrize("command", PIP_INSTALLS, ids=str)
def test_install_lines_install_the_checkout_with_existing_extras(command: Command) -> None:
    """From a clone, prodlens comes from the checkout (the PyPI form only in prose until it is
    published); its extras exist; every other name is a real distribution (installed here by the
    test extra, at the version the tests use)."""
    requirements = _requirements(command)
    local = [r for r in requirements if r.startswith((".", "/"))]
    assert len(local) == 1, f"{command}: install prodlens from the checkout path"
    path, _, extras = local[0].partition("[")
    assert (command.cwd / path).resolve() == ROOT, f"{command}: {path} is not the checkout"
    assert set(extras.rstrip("]").split(",")) - {""} <= EXTRAS, command
    for name in set(requirements) - set(local):
        assert not name.startswith("prodlens"), f"{command}: {name} is not on the index yet"
        try:
            version(name)
        except PackageNotFoundError:
            pytest.fail(f"{command}: {name} is not a distribution the tests install")


def test_pip_accepts_every_install_line_as_written() -> None:
    """Every requirement of the install lines, dry-run by pip from the line's directory (one pip
    run per directory: pip merges the checkout's extras): each path resolves to this checkout's
    prodlens and each name is satisfied."""
    by_directory: dict[Path, dict[str, None]] = {}
    for command in PIP_INSTALLS:
        words = by_directory.setdefault(command.cwd, {})
        words.update(dict.fromkeys(w for w in command.words[2:] if w != "-e"))  # same requirement
    for cwd, words in by_directory.items():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
             "--no-build-isolation", "--no-index", *words],
            cwd=cwd, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"{cwd}: {list(words)}\n{result.stderr[-2000:]}"
        assert f"Would install prodlens-{version('prodlens')}" in result.stdout, list(words)


def test_cd_lines_name_existing_directories() -> None:
    cds = [c for c in COMMANDS if c.words[0] == "cd"]
    assert {c.page for c in cds} >= {"examples/flask/README.md", "examples/fastapi/README.md",
                                     "examples/django/README.md", "examples/celery/README.md"}
    for command in cds:
        assert (command.cwd / command.words[1]).is_dir(), command


def test_exporters_named_are_installed_and_otlp_is_the_http_one() -> None:
    """``OTEL_TRACES_EXPORTER`` names an installed exporter; a page that selects ``otlp`` says
    ``http/protobuf`` and installs that exporter (the SDK's default, gRPC, is not installed by
    any page: it failed with "Requested component 'otlp_proto_grpc' not found")."""
    installed = {e.name for e in entry_points(group="opentelemetry_traces_exporter")}
    assert "otlp_proto_http" in installed
    installed.add("otlp")  # the SDK's alias: otlp_proto_grpc, or otlp_proto_http by protocol
    pages_with_otlp = set()
    for command in COMMANDS:
        exporters = assignments(command).get("OTEL_TRACES_EXPORTER")
        if exporters is None:
            continue
        for name in exporters.split(","):
            assert name == "none" or name in installed, f"{command}: {name} not installed"
            if name == "otlp":
                pages_with_otlp.add(command.page)
    assert pages_with_otlp  # the pages that show OTLP
    for page in pages_with_otlp:
        settings: dict[str, str] = {}
        for command in (c for c in COMMANDS if c.page == page):
            settings.update(assignments(command))
        assert settings.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "http/protobuf", page
        installs = {r for c in PIP_INSTALLS if c.page == page for r in _requirements(c)}
        assert "opentelemetry-exporter-otlp-proto-http" in installs, page


def test_zero_code_recipes_name_the_service_and_install_instrumentations() -> None:
    """A page that installs the OpenTelemetry distro and runs ``opentelemetry-instrument`` sets
    ``OTEL_SERVICE_NAME`` (else spans say ``unknown_service``) and installs instrumentations
    for the database and HTTP client spans (bootstrap, or the sqlite3 package by name)."""
    recipes = {c.page for c in PIP_INSTALLS if "opentelemetry-distro" in c.words}
    assert len(recipes) >= 8
    for page in recipes:
        commands = [c for c in COMMANDS if c.page == page]
        if not any("opentelemetry-instrument" in c.words for c in commands):
            continue
        assert any("OTEL_SERVICE_NAME" in assignments(c) for c in commands), page
        if page != "docs/integrations/openfeature.md":  # flags only: no database, no client
            assert any(c.words[:3] == ("opentelemetry-bootstrap", "-a", "install")
                       or "opentelemetry-instrumentation-sqlite3" in c.words
                       for c in commands), page


def _bash(script: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODLENS_", "OTEL_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_version_and_every_help() -> None:
    script = "\n".join(["prodlens --version", "prodlens --help", "python -m prodlens --help",
                        *(f"prodlens {sub} --help" for sub in ("config", "slice", "affected",
                                                              "demo"))])
    result = _bash(script, ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"prodlens {version('prodlens')}\n")


def _config_blocks() -> list[tuple[str, str]]:
    """Blocks made only of ``export`` lines and ``prodlens config`` (run verbatim)."""
    blocks: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for command in COMMANDS:
        blocks.setdefault((command.page, command.block), []).append(command.words)
    return [key for key, commands in blocks.items()
            if any(c[-1] == "config" for c in commands)
            and all(c[0] == "export" or c in (("prodlens", "config"),
                                              ("python", "-m", "prodlens", "config"))
                    for c in commands)]


def test_documented_config_blocks_run_and_exit_zero() -> None:
    blocks = _config_blocks()
    assert {page for page, _ in blocks} >= {"docs/getting-started.md", "docs/sources.md",
                                           "docs/configuration.md"}
    for page, block in blocks:
        result = _bash(block, ROOT)
        assert result.returncode == 0, f"{page}:\n{block}\n{result.stderr}"
        assert "PRODLENS_CUSTOMER_FROM" in result.stdout, page


SPANS_SCRIPT = """
import random
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import prodlens
from prodlens.exporter import OTLPJsonFileSpanExporter

exporter = OTLPJsonFileSpanExporter()  # PRODLENS_FILE_* as the page sets them, else defaults
provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
prodlens.configure(provider, metrics=False)
tracer = provider.get_tracer("docs")
rng = random.Random(7)
for i in range(400):
    region = rng.choice(["eu-west", "us-east", "ap-south"])
    with prodlens.tag(f"cust-{i % 60}", region=region):
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as span:
            if region == "eu-west" and rng.random() < 0.6:
                span.set_status(Status(StatusCode.ERROR))
provider.shutdown()
print(exporter.path)
"""


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_slice_and_affected_read_where_the_page_writes_spans(page: str, tmp_path: Path) -> None:
    """Spans written with the page's own file-exporter settings (README: none, the defaults) are
    where the page's ``prodlens slice`` / ``affected`` lines read them."""
    commands = [c for c in COMMANDS if c.page == page]
    settings: dict[str, str] = {}
    for command in commands:
        settings.update({k: v for k, v in assignments(command).items()
                         if k.startswith("PRODLENS_FILE_")})
    analysis = [c for c in commands if c.words[0] == "prodlens"
                and c.words[1] in ("slice", "affected")]
    assert [c.words[1] for c in analysis] == ["slice", "affected"], page
    written = subprocess.run([sys.executable, "-c", SPANS_SCRIPT], cwd=tmp_path,
                             env={**_clean_env(), **settings}, capture_output=True, text=True,
                             timeout=120)
    assert written.returncode == 0, written.stderr
    # The lines of the page's block, verbatim (the redirection included).
    block = next(b for b in BASH.findall((ROOT / page).read_text()) if "prodlens slice" in b)
    script = "\n".join(line for line in block.splitlines()
                       if line.startswith("prodlens "))
    result = _bash(script, tmp_path)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    assert "eu-west" in result.stdout
    csv_name = analysis[1].words[-1]
    assert "cust-" in (tmp_path / csv_name).read_text()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PRODLENS_", "OTEL_"))}

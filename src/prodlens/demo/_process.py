"""The demo shop as a subprocess: its environment, start-up, and a stop that flushes its spans.

The shop runs with the running interpreter (``sys.executable``) and OpenTelemetry's
auto-instrumentation ``sitecustomize`` folder first on ``PYTHONPATH``, which is what
``opentelemetry-instrument`` does, so the SDK is set up from ``OTEL_*`` variables and prodlens
from ``PRODLENS_*`` ones before the shop's code runs. It listens on 127.0.0.1 only; every wait
is bounded, and a stop escalates from SIGINT (the SDK's exit hook flushes) to SIGKILL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import site
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Final

from prodlens.demo.traffic import COHORT_HEADERS, CUSTOMER_HEADER

__all__ = ["EXTRA_HINT", "HOST", "LOG_FILE", "DemoError", "ShopProcess", "check_installed",
           "shop_environment", "start_shop"]

HOST: Final = "127.0.0.1"
EXTRA_HINT: Final = "pip install 'prodlens[demo]'"
_EXPORTER_VALUE: Final = "prodlens.exporter:OTLPJsonFileSpanExporter"
#: Modules the demo needs, from the ``demo`` extra.
_NEEDED: Final = ("flask", "opentelemetry.instrumentation.flask", "opentelemetry.distro",
                  "opentelemetry.instrumentation.auto_instrumentation", "orjson", "msgspec")
_START_TIMEOUT: Final = 60.0
_STOP_TIMEOUT: Final = 20.0
LOG_FILE: Final = "shop.log"
_READY: Final = "shop-ready.json"


class DemoError(RuntimeError):
    """The demo could not run (a missing extra, a shop that did not start, ...)."""


def _exporter_name() -> str:
    """The ``OTEL_TRACES_EXPORTER`` name under which prodlens's file exporter is installed."""
    for entry in entry_points(group="opentelemetry_traces_exporter"):
        if entry.value == _EXPORTER_VALUE:
            return entry.name
    raise DemoError("prodlens's OTLP/JSON file exporter is not registered as an "
                    "opentelemetry_traces_exporter entry point: install prodlens "
                    f"({EXTRA_HINT}, or pip install -e '.[demo]' in a checkout)")


def _auto_instrumentation_dir() -> Path:
    """The folder of OpenTelemetry's ``sitecustomize`` that ``opentelemetry-instrument`` uses."""
    spec = importlib.util.find_spec("opentelemetry.instrumentation.auto_instrumentation")
    if spec is None or spec.origin is None:
        raise DemoError(f"opentelemetry-instrumentation is missing ({EXTRA_HINT})")
    folder = Path(spec.origin).parent
    if not (folder / "sitecustomize.py").is_file():
        raise DemoError(f"{folder} has no sitecustomize.py: this opentelemetry-instrumentation "
                        "cannot auto-instrument")
    return folder


def check_installed() -> None:
    """Raise :class:`DemoError` naming what of the ``demo`` extra is not installed."""
    missing = [name for name in _NEEDED if _find_spec(name) is None]
    if missing:
        raise DemoError(f"missing {', '.join(missing)}: {EXTRA_HINT}")


def _find_spec(name: str) -> object | None:
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent package is missing
        return None


def shop_environment(spans_file: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The shop's environment: ``base`` without ``OTEL_*``/``PRODLENS_*``, then the demo's.

    Inherited ``OTEL_*`` and ``PRODLENS_*`` variables are dropped so that every run of the demo
    is configured the same way, by the variables below and nothing else. ``PYTHONPATH`` gets
    OpenTelemetry's ``sitecustomize`` folder first, as ``opentelemetry-instrument`` does.

    Example::

        >>> env = shop_environment(Path("/tmp/spans.jsonl"), {})
        >>> env["PRODLENS_COHORT_REGION_FROM"]
        'header:x-region'
    """
    base = os.environ if base is None else base
    env = {key: value for key, value in base.items()
           if not key.startswith(("OTEL_", "PRODLENS_"))}
    paths = [str(_auto_instrumentation_dir())]
    import prodlens

    # The shop must import the same prodlens as this process, even from a source checkout.
    root = str(Path(prodlens.__file__).resolve().parent.parent)
    if root not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        paths.append(root)
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({
        "OTEL_SERVICE_NAME": "demo-shop",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.8.0,deployment.environment.name=demo",
        "OTEL_TRACES_EXPORTER": _exporter_name(),
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # Never drop a span, and write batches often.
        "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "PRODLENS_FILE_PATH": str(spans_file),
        "PRODLENS_CUSTOMER_FROM": f"header:{CUSTOMER_HEADER}",
    })
    for name, header in COHORT_HEADERS.items():
        env[f"PRODLENS_COHORT_{name.upper()}_FROM"] = f"header:{header}"
    return env


# --- the shop process -----------------------------------------------------------------------


class ShopProcess:
    """The shop subprocess: started, waited for, stopped with a span flush."""

    def __init__(self, out: Path, env: Mapping[str, str], port: int) -> None:
        self.ready_file = out / _READY
        self.ready_file.unlink(missing_ok=True)
        self.log_path = out / LOG_FILE
        self.started = time.monotonic()
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        with open(self.log_path, "ab") as log:
            # cwd is the demo folder: nothing there can shadow a module the shop imports.
            self.process = subprocess.Popen(
                [sys.executable, *safe_path, "-m", "prodlens.demo.shop", "--port", str(port),
                 "--ready-file", str(self.ready_file), "--exit-with-parent"],
                env=dict(env), cwd=out, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Wait until the shop listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the shop exited with status {self.process.returncode} before "
                                f"it was ready:\n{self.log_tail()}")
            if self.ready_file.exists():
                self.port = int(json.loads(self.ready_file.read_text("utf-8"))["port"])
                self.ready_file.unlink(missing_ok=True)
                break
            time.sleep(0.05)
        else:
            raise DemoError(f"the shop did not start within {timeout:.0f} s:\n{self.log_tail()}")
        # The ready file is written once the socket listens; a bare connection confirms it
        # without a request (which would add a span the traffic driver did not send).
        try:
            with socket.create_connection((HOST, self.port), timeout=5):
                pass
        except OSError as error:
            raise DemoError(f"the shop does not accept connections on {self.url}: {error}"
                            ) from None

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self) -> int | None:
        """Stop the shop so its SDK flushes: SIGINT, then SIGTERM, then SIGKILL. Bounded."""
        if self.process.poll() is None:
            steps: tuple[tuple[signal.Signals | None, float], ...] = (
                (signal.SIGINT, _STOP_TIMEOUT), (signal.SIGTERM, 5.0), (None, 5.0))
            if os.name == "nt":  # no SIGINT to a child there: terminate (spans may be lost)
                steps = ((None, 5.0),)
            for sent, timeout in steps:
                if sent is None:
                    self.process.kill()
                else:
                    self.process.send_signal(sent)
                try:
                    self.process.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.ready_file.unlink(missing_ok=True)
        return self.process.returncode

    def log_tail(self, lines: int = 20) -> str:
        """The end of the shop's log, indented, for error messages."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])


def start_shop(out: Path, env: Mapping[str, str], port: int) -> ShopProcess:
    """Start the shop and wait until it listens; stop it again if that fails or is interrupted.

    Args:
        out: The demo folder: the shop's working directory, log and ready file.
        env: From :func:`shop_environment`.
        port: A port on 127.0.0.1, or 0 for a free one.

    Raises:
        DemoError: the shop exited or did not listen within a minute (with its log's end).
    """
    shop = ShopProcess(out, env, port)
    try:
        shop.wait_ready()
    except BaseException:
        shop.stop()
        raise
    return shop

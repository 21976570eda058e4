"""Django sets ``http.route`` after its server span opened: ``prodlens.repeat_count`` lands on
the span at the first child span (a query in the view), not on a view without child spans. Run
in a subprocess: Django's settings are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = 'import json, sqlite3, sys\nimport django\nfrom django.conf import settings\nsettings.configure(DEBUG=False, SECRET_KEY="x", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,\n                   MIDDLEWARE=[], INSTALLED_APPS=[], DATABASES={}, USE_TZ=True)\ndjango.setup()\nfrom django.http import HttpResponse\nfrom django.urls import path\nfrom opentelemetry.instrumentation.django import DjangoInstrumentor\nfrom opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor\nfrom opentelemetry.sdk.trace import TracerProvider\nfrom opentelemetry.sdk.trace.export import SimpleSpanProcessor\nfrom opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\nfrom opentelemetry.trace import SpanKind\nfrom prodlens.instrumentor import ProdlensInstrumentor\n\ndef with_query(request, board):\n    db = sqlite3.connect(":memory:"); db.cursor().execute("select 1").fetchall(); db.close()\n    return HttpResponse("ok")\n\ndef bare(request, board):\n    return HttpResponse("ok")\n\nurlpatterns = [path("q/<str:board>", with_query), path("b/<str:board>", bare)]\nprovider = TracerProvider(); exporter = InMemorySpanExporter()\nprovider.add_span_processor(SimpleSpanProcessor(exporter))\nProdlensInstrumentor().instrument(tracer_provider=provider, environ={\n    "PRODLENS_CUSTOMER_FROM": "header:x-customer-id"})\nDjangoInstrumentor().instrument(tracer_provider=provider)\nSQLite3Instrumentor().instrument(tracer_provider=provider)\nfrom django.test import Client\nc = Client()\nfor _ in range(3):\n    c.get("/q/7", headers={"x-customer-id": "acme"})\n    c.get("/b/7", headers={"x-customer-id": "acme"})\nout = [(s.name, s.attributes.get("http.route"), s.attributes.get("prodlens.repeat_count"))\n       for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]\nprint(json.dumps(out))\n'


def test_django_route_known_late(tmp_path: Path) -> None:
    (tmp_path / "check.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, "check.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        ["GET q/<str:board>", "q/<str:board>", 1], ["GET b/<str:board>", "b/<str:board>", None],
        ["GET q/<str:board>", "q/<str:board>", 2], ["GET b/<str:board>", "b/<str:board>", None],
        ["GET q/<str:board>", "q/<str:board>", 3], ["GET b/<str:board>", "b/<str:board>", None],
    ]

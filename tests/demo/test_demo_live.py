"""``prodlens demo --live`` end to end: a subprocess from an empty directory, a real shop, watch
following its spans, the bug deployed and fixed, a local webhook printing what it got."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("orjson")
pytest.importorskip("prodlens.demo.shop")

PLANTED_LABEL = "prodlens.cohort.new_checkout=on ∧ prodlens.cohort.region=eu-west"


@pytest.mark.slow
def test_live_demo_finds_the_outage_messages_the_customers_and_resolves(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "prodlens", "demo", "--live"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=280)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = out.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    outage = first(r"OUTAGE deployed")
    opened = first(rf"watch: incident OPEN: \[FIRING\] {re.escape(PLANTED_LABEL)}")
    batch = first(r"customer webhook got a firing batch of \d+ customers: cus_")
    fix = first(r"FIX deployed")
    resolved = first(rf"watch: incident RESOLVED: \[RESOLVED\] {re.escape(PLANTED_LABEL)}")
    resolved_batch = first(r"customer webhook got a resolved batch")
    assert outage < opened <= batch < fix < resolved <= resolved_batch
    summary = re.search(r"customers  (\d+) messaged while firing, (\d+) when resolved, each "
                        r"once, in \d+ batches; the traffic driver saw (\d+) customers", out)
    assert summary is not None and len(set(summary.groups())) == 1
    assert int(summary.group(1)) > 0
    assert f"incident   {PLANTED_LABEL}  (the planted bug)" in out
    listing = subprocess.run([sys.executable, "-m", "prodlens", "incidents", "--ledger",
                              str(tmp_path / "prodlens-demo" / "ledger.sqlite3")],
                             capture_output=True, text=True, timeout=60)
    assert listing.stdout.startswith("incidents: 1 (0 firing)\n  [RESOLVED] ")
    assert "pending deliveries: 0" in listing.stdout


def test_the_shop_switches_its_bug_on_and_off(tmp_path: Path) -> None:
    from prodlens.demo import shop

    app = shop.create_app(shop.Database(tmp_path / "shop.sqlite3"), outage=False)
    client = app.test_client()
    headers = {"x-customer-id": "c1", "x-region": "eu-west", "x-flag-new-checkout": "on"}
    assert client.get("/api/cart", headers=headers).status_code == 200
    assert client.post("/_demo/outage", data="on").status_code == 200
    assert client.get("/api/cart", headers=headers).status_code == 500
    assert client.post("/_demo/outage", data="off").status_code == 200
    assert client.get("/api/cart", headers=headers).status_code == 200
    assert client.post("/_demo/outage", data="maybe").status_code == 400

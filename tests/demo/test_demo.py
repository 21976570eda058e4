"""``prodlens demo`` end to end, as a user runs it: a subprocess from an empty directory.

The demo starts a real shop (Flask on werkzeug, 127.0.0.1) under OpenTelemetry's
auto-instrumentation, sends it traffic and analyses the OTLP/JSON spans it exported. These tests
check what it prints against the CSV it wrote and the ground truth of its traffic driver, that
every span is tagged, and that no shop is left listening whatever happens to the demo.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from prodlens.demo import traffic
from prodlens.demo.commands import shop_environment

pytest.importorskip("orjson")
shop = pytest.importorskip("prodlens.demo.shop")  # needs flask: the demo extra

PLANTED_LABEL = "prodlens.cohort.new_checkout=on ∧ prodlens.cohort.region=eu-west"
COHORTS = {"prodlens.cohort.plan", "prodlens.cohort.region", "prodlens.cohort.app_version",
           "prodlens.cohort.new_checkout"}
REQUESTS = 1000  # enough for the planted subgroup to stand out whatever the seed
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+) \(pid (\d+)\)")


def _demo_env() -> dict[str, str]:
    # Variables a user may have exported for their own service: the demo must not pick them up.
    env = dict(os.environ)
    env.update({"OTEL_TRACES_EXPORTER": "otlp", "PRODLENS_CUSTOMER_FROM": "user",
                "PRODLENS_PSEUDONYMIZE": "true"})
    return env


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "prodlens", "demo", *args]


def _gone(pid: int, port: int, wait: float = 5.0) -> bool:
    """The shop process has exited and nothing listens on its port."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            alive = Path(f"/proc/{pid}/stat").exists() and \
                Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        except ProcessLookupError:
            alive = False
        if not alive:
            with socket.socket() as probe:
                probe.settimeout(1)
                return probe.connect_ex(("127.0.0.1", port)) != 0
        time.sleep(0.1)
    return False


def _spans(path: Path) -> Iterator[dict[str, object]]:
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    span["scope"] = scope["scope"]["name"]
                    yield span


def _attributes(span: dict[str, object]) -> dict[str, object]:
    pairs = span.get("attributes", [])
    assert isinstance(pairs, list)
    return {pair["key"]: next(iter(pair["value"].values())) for pair in pairs}


@contextlib.contextmanager
def _running_demo(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The demo in the background; killed (if still running) and reaped on the way out."""
    with open(cwd / "stderr.txt", "w") as stderr, \
            subprocess.Popen(_demo(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=stderr,
                             text=True) as process:
        try:
            yield process
        finally:
            process.kill()
            process.wait(10)


class _Lines:
    """Lines of a running process's stdout, read with a timeout."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream],
                         daemon=True).start()

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match
        raise AssertionError(f"no {regex.pattern!r} in:\n{''.join(self.seen)}")


# --- the whole demo -------------------------------------------------------------------------


def test_demo_names_the_planted_subgroup_and_the_affected_customers(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(_demo("--out", "out", "--requests", str(REQUESTS), "--seed", "3"),
                            cwd=tmp_path, env=_demo_env(), capture_output=True, text=True,
                            timeout=120)
    elapsed = time.monotonic() - started
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert elapsed < 60

    out = tmp_path / "out"
    truth = json.loads((out / "ground-truth.json").read_text())
    with open(out / "affected-customers.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    affected = {row["customer"] for row in rows}

    # The failing subgroup is the planted one, with its numbers.
    assert "Failing subgroup" in output
    subgroup_line = output.split("Failing subgroup", 1)[1].splitlines()[1].strip()
    assert subgroup_line == PLANTED_LABEL
    assert truth["planted"] == {"prodlens.cohort.new_checkout": "on",
                                "prodlens.cohort.region": "eu-west"}
    # The affected count printed = rows of the CSV = customers the traffic driver saw fail.
    count = int(re.search(r"(\d[\d,]*) customers saw at least one failure: (\d+) in the "
                          r"failing subgroup", output).group(1).replace(",", ""))
    in_subgroup = int(re.search(r"customers saw at least one failure: (\d+) in", output)
                      .group(1))
    assert affected == set(truth["failed_customers"])
    assert count == len(rows) == len(truth["failed_customers"]) > 0
    assert in_subgroup == len(truth["failed_customers_in_planted_subgroup"]) > 0
    for row in rows:
        if row["customer"] in truth["failed_customers_in_planted_subgroup"]:
            assert row["prodlens.cohort.region"] == "eu-west"
            assert row["prodlens.cohort.new_checkout"] == "on"
        assert int(row["failures"]) == truth["failed_customers"][row["customer"]]
    # Where the CSV is, and the commands to look again.
    assert "CSV: out/affected-customers.csv" in output
    assert re.search(r"prodlens slice out/spans$", output, re.M)
    assert re.search(r"prodlens affected out/spans > affected\.csv$", output, re.M)
    assert re.search(r"Done in \d+\.\d s\.", output)

    # Every request arrived as a span, every server span is tagged, nothing extra was sent.
    assert f"{REQUESTS:,} requests (every request is there)" in output
    spans = list(_spans(out / "spans" / "spans.jsonl"))
    servers = [s for s in spans if s["kind"] == 2]
    assert len(servers) == REQUESTS == truth["requests"]
    assert sum(1 for s in servers if s.get("status", {}).get("code") == 2) == \
        truth["failed_requests"]
    for span in servers:
        attributes = _attributes(span)
        assert "enduser.id" in attributes, span
        assert attributes.keys() >= COHORTS, span
    assert any(s["scope"] == "opentelemetry.instrumentation.sqlite3" for s in spans)

    # The shop is gone.
    port, pid = map(int, LISTENING.search(output).groups())
    assert _gone(pid, port)


def _normalised(text: str) -> list[str]:
    """Output lines without what changes from run to run: times, rates, port, pid, paths."""
    rules = [
        (r"http://127\.0\.0\.1:\d+ \(pid \d+\), ready in [\d.]+ s", "URL"),
        (r"[\d.]+ s \([\d,]+ req/s\)", "TIME"),
        (r"Done in [\d.]+ s", "Done in TIME"),
        (r"^  \S*?(?:python[\d.]* -m )?prodlens (slice|affected)", r"  prodlens \1"),
    ]
    lines = []
    for line in text.strip().splitlines():
        for pattern, replacement in rules:
            line = re.sub(pattern, replacement, line)
        lines.append(line)
    return lines


def test_the_run_pasted_in_the_docs_is_what_the_demo_prints(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "demo.md").read_text()
    pasted = docs.split("## A real run", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    result = subprocess.run(_demo(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _normalised(result.stdout) == _normalised(pasted)


def test_interrupting_the_demo_stops_the_shop(tmp_path: Path) -> None:
    with _running_demo(tmp_path, "--out", "out", "--requests", "20000") as process:
        port, pid = map(int, _Lines(process).wait_for(LISTENING).groups())
        time.sleep(0.5)  # mid-traffic
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=40) == 130
    assert _gone(pid, port)
    # The spans of the requests served before the interruption were flushed.
    assert (tmp_path / "out" / "spans" / "spans.jsonl").stat().st_size > 0


def test_a_killed_demo_leaves_no_shop_behind(tmp_path: Path) -> None:
    with _running_demo(tmp_path, "--out", "out", "--requests", "20000") as process:
        port, pid = map(int, _Lines(process).wait_for(LISTENING).groups())
        process.kill()  # no finally block runs in the demo: the shop notices on its own
    assert _gone(pid, port, wait=10)


def test_a_shop_that_dies_mid_traffic_ends_the_demo_with_its_log(tmp_path: Path) -> None:
    with _running_demo(tmp_path, "--out", "out", "--requests", "20000") as process:
        port, pid = map(int, _Lines(process).wait_for(LISTENING).groups())
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=30) == 1
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "the shop exited with status -9 during the traffic" in stderr
    assert _gone(pid, port)


def test_keep_leaves_the_shop_running_until_ctrl_c(tmp_path: Path) -> None:
    with _running_demo(tmp_path, "--out", "out", "--requests", str(REQUESTS), "--keep") as process:
        lines = _Lines(process)
        url = lines.wait_for(r"The shop is running at (http://127\.0\.0\.1:\d+);").group(1)
        curl = lines.wait_for(r"^  curl ").string
        assert "-H 'x-customer-id: cus_9999'" in curl and "-H 'x-region: eu-west'" in curl
        request = urllib.request.Request(f"{url}/api/products", headers={
            "x-customer-id": "my-own-customer", "x-plan": "enterprise"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=40) == 0
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    mine = [s for s in _spans(tmp_path / "out" / "spans" / "spans.jsonl")
            if s["kind"] == 2 and _attributes(s).get("enduser.id") == "my-own-customer"]
    assert len(mine) == 1
    assert _attributes(mine[0])["prodlens.cohort.plan"] == "enterprise"


def test_a_shop_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(_demo("--out", "out", "--port", str(port)), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "the shop exited with status 1 before it was ready" in result.stderr
    assert "Address already in use" in result.stderr
    assert not (tmp_path / "out" / "affected-customers.csv").exists()


def test_missing_out_directory_parent_is_created(tmp_path: Path) -> None:
    result = subprocess.run(_demo("--out", "a/b/c", "--requests", "100", "--seed", "1"),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    assert (tmp_path / "a" / "b" / "c" / "affected-customers.csv").exists()


# --- the parts ------------------------------------------------------------------------------


def test_traffic_is_planned_from_the_seed_alone() -> None:
    state = random.getstate()

    def plan(seed: int) -> list[tuple[str, str, str, bytes | None]]:
        rng = random.Random(seed)
        sessions = traffic.plan_sessions(rng, traffic.make_customers(rng, 300), 1234)
        return [(r.customer.id, r.method, r.path, r.body) for s in sessions for r in s]

    first = plan(5)
    assert first == plan(5)
    assert first != plan(6)
    assert len(first) == 1234
    assert random.getstate() == state  # the global generator (SDK ids) is never touched


def test_customers_carry_every_cohort_as_a_header() -> None:
    customers = traffic.make_customers(random.Random(1), 300)
    assert len({c.id for c in customers}) == 300
    headers = customers[0].headers()
    assert set(headers) == {"x-customer-id", "x-plan", "x-region", "x-app-version",
                            "x-flag-new-checkout"}
    planted = [c for c in customers if c.planted]
    assert 0 < len(planted) < len(customers) // 5
    assert all(c.cohorts["region"] == "eu-west" and c.cohorts["new_checkout"] == "on"
               for c in planted)


def test_the_progress_bar_is_quiet_when_not_a_terminal() -> None:
    stream = StringIO()
    progress = traffic.Progress(10, "traffic", stream)
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""


def test_the_progress_bar_draws_on_a_terminal() -> None:
    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()  # no encoding: the bar falls back to ASCII
    progress = traffic.Progress(10, "traffic", stream, width=10)
    progress.update(5)
    assert stream.getvalue().startswith("\r  traffic  #####-----      5/10 ")
    progress.close()
    assert stream.getvalue().endswith("\r\033[K")


def test_the_shop_environment_is_only_the_demos(tmp_path: Path) -> None:
    env = shop_environment(tmp_path / "spans.jsonl",
                           {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "PRODLENS_METRICS": "1",
                            "PYTHONPATH": "/mine", "HOME": "/home/me"})
    assert env["HOME"] == "/home/me"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env and "PRODLENS_METRICS" not in env
    first, *rest = env["PYTHONPATH"].split(os.pathsep)
    assert (Path(first) / "sitecustomize.py").is_file()
    assert rest[-1] == "/mine"
    assert env["PRODLENS_FILE_PATH"] == str(tmp_path / "spans.jsonl")
    assert env["PRODLENS_CUSTOMER_FROM"] == "header:x-customer-id"
    assert {key for key in env if key.startswith("PRODLENS_COHORT_")} == {
        "PRODLENS_COHORT_PLAN_FROM", "PRODLENS_COHORT_REGION_FROM",
        "PRODLENS_COHORT_APP_VERSION_FROM", "PRODLENS_COHORT_NEW_CHECKOUT_FROM"}


def test_the_shop_has_no_prodlens_code() -> None:
    tree = ast.parse(Path(shop.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in ("prodlens", "opentelemetry")}


def test_the_shop_fails_only_for_the_new_checkout_in_eu_west(tmp_path: Path) -> None:
    app = shop.create_app(shop.Database(tmp_path / "shop.sqlite3"))
    client = app.test_client()

    def checkout(region: str, flag: str, card: str = "tok_visa") -> int:
        headers = {"x-customer-id": f"{region}-{flag}", "x-region": region,
                   "x-flag-new-checkout": flag}
        assert client.post("/api/cart/items", json={"product": 1}, headers=headers
                           ).status_code == 201
        cart = client.get("/api/cart", headers=headers).status_code
        done = client.post("/api/checkout", json={"card": card}, headers=headers).status_code
        assert cart == (500 if done == 500 else 200)
        return done

    assert checkout("eu-west", "on") == 500
    assert checkout("eu-west", "off") == 201
    assert checkout("us-east", "on") == 201
    assert checkout("ap-south", "off", card=shop.TIMEOUT_CARD) == 502
    assert shop.TIMEOUT_CARD == traffic.TIMEOUT_CARD

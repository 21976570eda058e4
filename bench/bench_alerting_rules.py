"""What Prometheus spends evaluating ``prodlens rules`` for 20 cohorts x 50 values, with pairs.

One real Prometheus (Debian's 2.42, on 127.0.0.1, temp data dir) scrapes a synthetic
``prodlens_requests_total`` exposition every second: ``--series`` distinct attribute sets (the
metrics' series budget, PRODLENS_METRICS_MAX_SERIES, default 2000) x ``error`` true/false, each
carrying all 20 cohort labels with values drawn from 50 per cohort, counters growing at random
fixed rates. It also scrapes itself. Once the data fills the long window, it loads, one after
the other (a reload each), the rule groups that ``prodlens rules`` generates for

* ``singles``: the 20 cohorts;
* ``pairs5``: the 20 cohorts and 5 pairs (c00,c01 … c04,c05);
* ``pairs20``: the 20 cohorts and 20 pairs (neighbours: c00,c01 … c19,c00),

and evaluates each alone every 15 s for ``--measure`` seconds.

Windows are scaled to the 1 s scrape so that each range holds as many samples as the defaults do
at a 15 s scrape: short 20 s (20 samples; 5m at 15 s) and long 4m (240 samples; 1h at 15 s).
After the long window has filled, the figure is Prometheus's own
``prometheus_rule_group_last_duration_seconds`` per group: the median and max over the last
90 s of evaluations (``quantile_over_time``), the rule count and the samples each evaluation
writes; and, since wall time on a shared machine includes waiting for a CPU, Prometheus's own
CPU (``process_cpu_seconds_total``) during the variant minus its CPU without rules, per
evaluation. Run::

    python bench/bench_alerting_rules.py                # ~10 min
    python bench/bench_alerting_rules.py --series 2000 --fill 270 --measure 90
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COHORTS = [f"c{n:02d}" for n in range(20)]
VALUES = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Exposition:
    """The synthetic /metrics: fixed label sets, counters = rate x elapsed seconds."""

    def __init__(self, series: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.started = time.monotonic()
        self.rows: list[tuple[str, float]] = []
        seen: set[tuple[int, ...]] = set()
        while len(seen) < series:
            values = tuple(rng.randrange(VALUES) for _ in COHORTS)
            if values in seen:
                continue
            seen.add(values)
            labels = ",".join(f'prodlens_cohort_{c}="v{v:02d}"'
                              for c, v in zip(COHORTS, values, strict=True))
            rate = rng.uniform(0.01, 2.0)
            failing = rng.random() < 0.05  # a few subgroups fail noticeably
            for error, share in (("false", 0.98), ("true", 0.02)):
                if failing:
                    share = 0.7 if error == "false" else 0.3
                self.rows.append((f'prodlens_requests_total{{error="{error}",http_route="/x",'
                                  f'service_name="shop",{labels}}}', rate * share))

    def render(self) -> bytes:
        elapsed = time.monotonic() - self.started
        lines = ["# TYPE prodlens_requests_total counter"]
        lines += [f"{name} {rate * elapsed:.3f}" for name, rate in self.rows]
        return ("\n".join(lines) + "\n").encode()


def serve(exposition: Exposition) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = exposition.render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rules(name: str, pairs: list[tuple[str, str]], folder: Path) -> tuple[Path, int]:
    argv = [sys.executable, "-m", "prodlens", "rules", "--short-window", "20s",
            "--long-window", "4m"]
    for cohort in COHORTS:
        argv += ["--cohort", cohort]
    for a, b in pairs:
        argv += ["--pair", f"{a},{b}"]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    # Three groups in one Prometheus: their recorded series and alerts must not collide.
    text = (text.replace('name: "prodlens-subgroups"', f'name: "{name}"', 1)
            .replace("job_prodlens", f"{name}_job_prodlens")
            .replace("job:prodlens", f"{name}_job:prodlens")
            .replace('severity: "page"', f'severity: "{name}"'))
    path = folder / f"{name}.yml"
    path.write_text(text)
    return path, text.count("- record:") + text.count("- alert:")


def query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.loads(response.read())
    return list(answer["data"]["result"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--fill", type=float, default=270.0,
                        help="seconds before measuring (the 4m window fills)")
    parser.add_argument("--measure", type=float, default=90.0)
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus is not installed (apt-get install prometheus)", file=sys.stderr)
        return 2
    neighbours = [(COHORTS[n], COHORTS[(n + 1) % 20]) for n in range(20)]
    variants = (("singles", []), ("pairs5", neighbours[:5]), ("pairs20", neighbours))
    with tempfile.TemporaryDirectory(prefix="prodlens-bench-rules-") as scratch:
        folder = Path(scratch)
        groups = {name: rules(name, pairs, folder) for name, pairs in variants}
        exposition = Exposition(args.series)
        target = serve(exposition)
        port = free_port()
        rule_file = folder / "current.yml"
        rule_file.write_text("groups: []\n")
        (folder / "prometheus.yml").write_text(json.dumps({
            # Scraped every second (the scaled windows), evaluated every 15 s like a common
            # production setup: an evaluation's cost does not depend on the interval.
            "global": {"scrape_interval": "1s", "evaluation_interval": "15s"},
            "rule_files": [str(rule_file)],
            "scrape_configs": [
                {"job_name": "shop", "static_configs": [
                    {"targets": [f"127.0.0.1:{target.server_address[1]}"]}]},
                {"job_name": "prometheus", "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"]}]},
            ],
        }))
        log = (folder / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        try:
            print(f"{len(exposition.rows)} series; filling the 4m window for {args.fill:.0f} s, "
                  f"then each group alone for {args.measure:.0f} s ...", file=sys.stderr,
                  flush=True)
            time.sleep(args.fill)
            window = f"{int(args.measure)}s"
            # Prometheus's CPU without rules (scraping 4,000 series a second, the self-scrape):
            # subtracted, the rest of its CPU during a variant is that variant's evaluations.
            cpu = f'rate(process_cpu_seconds_total{{job="prometheus"}}[{window}])'
            baseline = float(query(port, cpu)[0]["value"][1])
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; Prometheus "
                  f"without rules: {baseline:.2f} CPU", file=sys.stderr)
            print("| group | rules | samples written per evaluation | median eval (wall) | "
                  "max eval (wall) | CPU per evaluation |")
            print("| --- | --- | --- | --- | --- | --- |", flush=True)
            for name, (path, count) in groups.items():
                # One group at a time (groups evaluate concurrently): load it, let it run.
                rule_file.write_text(path.read_text())
                process.send_signal(signal.SIGHUP)
                time.sleep(args.measure)
                if process.poll() is not None:
                    print((folder / "prometheus.log").read_text(), file=sys.stderr)
                    return 1
                selector = f'{{rule_group=~".*;{name}"}}'
                median = query(port, "quantile_over_time(0.5, prometheus_rule_group_last_"
                                     f"duration_seconds{selector}[{window}])")
                most = query(port, "max_over_time(prometheus_rule_group_last_duration_seconds"
                                   f"{selector}[{window}])")
                samples = query(port, "prometheus_rule_group_last_evaluation_samples"
                                      + selector)
                busy = query(port, cpu)
                if not (median and most and samples and busy):
                    print(f"| {name} | {count} | no data: see {folder / 'prometheus.log'} |")
                    continue
                per_evaluation = (float(busy[0]["value"][1]) - baseline) * 15.0
                print(f"| {name} | {count} | {float(samples[0]['value'][1]):,.0f} | "
                      f"{float(median[0]['value'][1]) * 1000:.0f} ms | "
                      f"{float(most[0]['value'][1]) * 1000:.0f} ms | "
                      f"{per_evaluation:.2f} s |", flush=True)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()
            target.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how long the playground takes to answer one change, as the page sees it.

A real playground server on 127.0.0.1 (`pdasgd.playground.start_server`, a thread of this process) and
HTTP GETs of `/api/simulate` as the page sends them: 16 layers x 60 batches, 1F+2B, for each method, and
for async-lu with jitter, a hand-off delay and a straggler (SimPy engine instead of the fast path). The time
is the client's, from the request to the parsed JSON: simulation, the contrast method's summary for
async-lu/async-bu, the closed forms, the timeline's blocks and the encoding included. Target: at most
100 ms per answer (issue 17). Median, 90th percentile and worst of --repeats requests per setting, after
two warm-up requests.

With --browser it also drives the page in headless Chromium (tests/chromium.py) and reads the page's own
figure: from asking the server to the redrawn chart, table and staleness plot (the page waits 250 ms after
a keystroke before it asks; that pause is not counted), 16 layers x 60 batches, backward workers typed
2, 3, 2, 3, ...

Usage:
    .venv/bin/python benchmarks/bench_playground.py [--repeats 30] [--browser]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pdasgd.playground import base_from, start_server

TARGET_MS = 100.0
SIZE = "layers=16&batches=60&backward=2"
SETTINGS = {
    "async-lu (fast path, BU beside it)": f"{SIZE}&method=async-lu",
    "async-bu (fast path, LU beside it)": f"{SIZE}&method=async-bu",
    "sequential (fast path)": f"{SIZE}&method=sequential",
    "hogwild, 2 workers (SimPy)": f"{SIZE}&method=hogwild",
    "async-lu, jitter + hand-off + straggler (SimPy)": f"{SIZE}&method=async-lu&jitter_cv=0.2"
    "&handoff_s=0.3&straggler=backward&straggler_index=1&straggler_s=1",
}


def timed_get(url: str) -> tuple[float, dict]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, body


def measure(base_url: str, query: str, repeats: int) -> dict:
    url = f"{base_url}api/simulate?{query}"
    for _ in range(2):
        timed_get(url)
    client_ms, server_ms, spans = [], [], 0
    for _ in range(repeats):
        elapsed_ms, body = timed_get(url)
        client_ms.append(elapsed_ms)
        server_ms.append(body["elapsed_ms"])
        spans = len(body["blocks"]) + len(body["updates"]) + len(body["other"])
    ordered = sorted(client_ms)
    return {
        "median_ms": statistics.median(client_ms),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "worst_ms": ordered[-1],
        "server_median_ms": statistics.median(server_ms),
        "drawn": spans,
        "engine": body["engine"],
    }


def measure_page(base_url: str, repeats: int) -> list[float]:
    """The page's ask-to-drawn times (ms) for `repeats` changes of the backward workers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from chromium import start_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    shown_ms = []
    with tempfile.TemporaryDirectory() as profile:
        driver = start_chromium(Path(profile))
        try:
            driver.get(f"{base_url}?{SIZE}")
            section = driver.find_element(By.ID, "view-a")
            for change in range(repeats + 2):
                backward = str(3 - change % 2)
                field = driver.find_element(By.ID, "a-backward")
                field.send_keys(Keys.CONTROL, "a")
                field.send_keys(backward)
                WebDriverWait(driver, 30).until(
                    lambda _, want=f"backward={backward}&": (
                        section.get_attribute("data-state") == "ready"
                        and want in section.get_attribute("data-query")
                    )
                )
                if change >= 2:  # two warm-up changes
                    shown_ms.append(float(section.get_attribute("data-shown-ms")))
        finally:
            driver.quit()
    return shown_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    args = parser.parse_args()
    server = start_server(0, base_from(None))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        print(f"{'setting':50} {'median':>8} {'p90':>8} {'worst':>8} {'server':>8}  engine  items")
        for label, query in SETTINGS.items():
            row = measure(server.url, query, args.repeats)
            verdict = "ok" if row["median_ms"] <= TARGET_MS else "OVER"
            print(
                f"{label:50} {row['median_ms']:7.1f}ms {row['p90_ms']:7.1f}ms {row['worst_ms']:7.1f}ms "
                f"{row['server_median_ms']:7.1f}ms  {row['engine']:6}  {row['drawn']}  {verdict}"
            )
        if args.browser:
            shown = sorted(measure_page(server.url, args.repeats))
            print(
                f"{'page: ask to drawn, async-lu 1F:2B/1F:3B':50} {statistics.median(shown):7.1f}ms "
                f"{shown[int(0.9 * (len(shown) - 1))]:7.1f}ms {shown[-1]:7.1f}ms"
            )
    finally:
        server.shutdown()
        server.server_close()
    print(f"target: an answer within {TARGET_MS:.0f} ms (median of {args.repeats} requests per setting)")


if __name__ == "__main__":
    main()

"""One REST load-generating process: `--threads` keep-alive connections (http.client, far
lighter than requests), each sending one request after another between two wall-clock
instants shared by every process of the run. Prints JSON: requests done, errors, latencies
(ms) and the CPU this process used, so the caller can see whether the client was the
bottleneck.

    python bench/loadgen.py --url http://127.0.0.1:8080 --mode get --ids-file ids.txt \
        --start-at 1700000000.5 --end-at 1700000005.5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import threading
import time
from urllib.parse import urlsplit

from stack import API_KEY

SUBMIT_BODY = json.dumps({"type": "bench.noop", "queue": "bench-rest", "payload": {"n": 1}}).encode()


def main() -> None:
    options = parse_args()
    ids = open(options.ids_file).read().split() if options.ids_file else []
    results: list[tuple[int, int, list[float]]] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_connection(options, ids)))
        for _ in range(options.threads)
    ]
    cpu_before = os.times()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_after = os.times()
    print(
        json.dumps(
            {
                "done": sum(done for done, _, _ in results),
                "errors": sum(errors for _, errors, _ in results),
                "latencies_ms": [round(ms, 3) for _, _, latencies in results for ms in latencies],
                "cpu_seconds": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
            }
        )
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("submit", "get"), required=True)
    parser.add_argument("--ids-file", help="job ids to GET, whitespace-separated")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--start-at", type=float, required=True, help="unix time the measured window opens")
    parser.add_argument("--end-at", type=float, required=True, help="unix time the measured window closes")
    return parser.parse_args()


def run_connection(options: argparse.Namespace, ids: list[str]) -> tuple[int, int, list[float]]:
    """Requests back to back until end-at; only those sent inside the window count."""
    address = urlsplit(options.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    done, errors, latencies = 0, 0, []
    while (now := time.time()) < options.end_at:
        started = time.perf_counter()
        ok = send(conn, options.mode, ids)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if now < options.start_at:
            continue
        if ok:
            done += 1
            latencies.append(elapsed_ms)
        else:
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    conn.close()
    return done, errors, latencies


def send(conn: http.client.HTTPConnection, mode: str, ids: list[str]) -> bool:
    headers = {"X-API-Key": API_KEY}
    try:
        if mode == "submit":
            headers["Content-Type"] = "application/json"
            conn.request("POST", "/v1/jobs", SUBMIT_BODY, headers)
            expected = 201
        else:
            conn.request("GET", f"/v1/jobs/{random.choice(ids)}", headers=headers)
            expected = 200
        response = conn.getresponse()
        response.read()
        return response.status == expected
    except (OSError, http.client.HTTPException):
        return False


if __name__ == "__main__":
    main()

"""One REST load-generating process: `--threads` keep-alive connections (http.client, far
lighter than requests), each sending one request after another within a wall-clock window
shared by every process of the run. It prints `ready`, reads `<start unix time> <end unix
time>` from stdin, and prints JSON: requests done, errors, latencies (ms) and the CPU this
process used in the window, so the caller can see whether the client was the bottleneck.

    echo "$(date +%s) $(($(date +%s) + 5))" | python bench/loadgen.py --url http://127.0.0.1:8080 \
        --api-key KEY --mode get --ids-file ids.txt
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

SUBMIT_BODY = json.dumps({"type": "bench.noop", "queue": "bench-rest", "payload": {"n": 1}}).encode()


def main() -> None:
    options = parse_args()
    ids = Path(options.ids_file).read_text().split() if options.ids_file else []
    print("ready", flush=True)
    options.start_at, options.end_at = (float(word) for word in sys.stdin.readline().split())
    results: list[tuple[int, int, list[float]]] = []
    threads = [
        threading.Thread(target=lambda: results.append(run_connection(options, ids))) for _ in range(options.threads)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, options.start_at - time.time()))
    cpu_before = os.times()
    time.sleep(max(0.0, options.end_at - time.time()))
    cpu_after = os.times()
    for thread in threads:
        thread.join()
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
    parser.add_argument("--api-key", required=True)
    return parser.parse_args()


def run_connection(options: argparse.Namespace, ids: list[str]) -> tuple[int, int, list[float]]:
    """Requests back to back until end-at; only those sent inside the window count."""
    address = urlsplit(options.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    done, errors, latencies = 0, 0, []
    while (now := time.time()) < options.end_at:
        started = time.perf_counter()
        ok = send(conn, options.mode, ids, options.api_key)
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


def send(conn: http.client.HTTPConnection, mode: str, ids: list[str], api_key: str) -> bool:
    headers = {"X-API-Key": api_key}
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

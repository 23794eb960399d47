"""PostgreSQL NOTIFY publishes from many threads of one process, as a web process's request
threads make them: how many NOTIFY statements PostgreSQL ran, how long a publish kept its
caller, and the notifying session's CPU (/proc). Not part of the test run; prints figures
and asserts nothing.

    python bench/notify_publish.py                            # 8 threads x 400, 1 ms apart
    python bench/notify_publish.py --threads 16 --publishes 1000 --gap-ms 0.5
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psycopg2

from quorra.notify import PgNotifier

DEFAULT_POSTGRES = os.environ.get("QUORRA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = parse_args()
    notifier = PgNotifier(args.pg_url, interval=30, backstop=30)
    statements, send = [0], notifier._notify

    def counted(queues) -> None:  # the real NOTIFY, counted
        statements[0] += 1
        send(queues)

    notifier._notify = counted
    notifier.publish("warm-up")  # the connection is open before the clock starts
    statements[0] = 0
    cpu_before = _session_cpu_ms(args.pg_url)
    waits: list[float] = []

    def publisher() -> None:
        for _ in range(args.publishes):
            time.sleep(args.gap_ms / 1000)
            started = time.perf_counter()
            notifier.publish("bench")
            waits.append(time.perf_counter() - started)

    threads = [threading.Thread(target=publisher) for _ in range(args.threads)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    cpu = _session_cpu_ms(args.pg_url) - cpu_before
    notifier.close()
    waits.sort()
    print(
        f"{len(waits)} publishes from {args.threads} threads in {seconds:.2f} s: {statements[0]} NOTIFY statements,"
        f" a publish kept its caller p50 {waits[len(waits) // 2] * 1000:.3f} ms,"
        f" p99 {waits[int(len(waits) * 0.99)] * 1000:.2f} ms; the notifying session's CPU {cpu:.0f} ms"
    )


def _session_cpu_ms(url: str) -> float:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'quorra-notify'")
        pids = [row[0] for row in cursor.fetchall()]
    conn.close()
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * TICK_MS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_POSTGRES)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--publishes", type=int, default=400, help="per thread")
    parser.add_argument("--gap-ms", type=float, default=1.0, help="each thread's pause before each publish")
    return parser.parse_args()


if __name__ == "__main__":
    main()

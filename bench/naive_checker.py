"""A deliberately naive Galera health checker, the baseline the agent is measured against.

Why: most hand-written checks open a MySQL connection per HTTP request and run
SHOW STATUS LIKE 'wsrep_local_state', with no timeouts. This is that pattern (a tiny WSGI app on
waitress with the agent's SERVER_SETTINGS, so only the checking pattern differs). It hangs on a
frozen or blackholed node *by design*: whoever starts it must use client timeouts and kill it by
PID afterwards (bench/_common.py start_naive / Server.kill do).

`serve` runs the checker; `compare` is a short self-contained run (its own 3-node test bed) of
the naive checker beside the agent: healthy latency at concurrency 16 and MySQL connections per
second on the node under that load. The full comparisons are in probe_latency.py and db_cost.py.

Usage: python bench/naive_checker.py serve --port 8081 --mysql 127.0.0.1:3306 --user health
           --password-file F
       python bench/naive_checker.py compare [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common


def make_app(host: str, port: int, user: str, password: str) -> Callable[..., Iterable[bytes]]:
    import mysql.connector

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/ping":  # readiness of the checker itself, no MySQL
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
            return [b"ok\n"]
        try:
            # the usual pattern: a fresh connection per request, no timeouts at all
            connection = mysql.connector.connect(host=host, port=port, user=user, password=password)
            try:
                cursor = connection.cursor()
                cursor.execute("SHOW STATUS LIKE 'wsrep_local_state'")
                row: Any = cursor.fetchone()
            finally:
                connection.close()
            healthy = row is not None and str(row[1]) == "4"
        except Exception as exc:
            body = f"error: {exc}\n".encode()
            start_response("503 Service Unavailable", [("Content-Length", str(len(body)))])
            return [body]
        body = b"synced\n" if healthy else b"not synced\n"
        status = "200 OK" if healthy else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve(args: argparse.Namespace) -> int:
    from waitress import serve as waitress_serve

    from galera_health.web import SERVER_SETTINGS

    host, _, port = args.mysql.rpartition(":")
    with open(args.password_file, encoding="utf-8") as handle:
        password = handle.read().strip()
    app = make_app(host, int(port), args.user, password)
    waitress_serve(app, listen=f"127.0.0.1:{args.port}", **SERVER_SETTINGS)
    return 0


def compare(args: argparse.Namespace) -> int:
    from db_cost import counters  # the same counter reader db_cost.py uses

    from galera_health.testbed import GaleraTestbed

    _common.pin_self()
    print(_common.machine_line())
    bed = GaleraTestbed(3)
    agent = naive = None
    try:
        bed.start()
        n1 = bed.node("n1")
        agent = _common.start_agent([f"n1={n1.address()}"], bed.password_file)
        naive = _common.start_naive(n1.host, n1.port, "health", bed.password_file)
        rows = []
        for name, server in (("agent", agent), ("naive", naive)):
            before = counters(n1)
            started = time.monotonic()
            result = _common.wrk(server.url(), 16, args.seconds, timeout=1.0)
            after = counters(n1)
            took = time.monotonic() - started
            conns = (after["connections"] - before["connections"]) / took
            rows.append(
                [
                    name,
                    f"{result.rps:.0f}",
                    _common.fmt(result.p50_ms),
                    _common.fmt(result.p99_ms),
                    f"{conns:.1f}",
                ]
            )
        print(_common.table(["checker", "req/s", "p50 ms", "p99 ms", "MySQL conns/s"], rows))
    finally:
        if naive is not None:
            naive.kill()
        if agent is not None:
            agent.stop()
        bed.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the naive checker")
    run.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    run.add_argument("--mysql", required=True, help="HOST:PORT of the node")
    run.add_argument("--user", required=True)
    run.add_argument("--password-file", required=True)
    short = commands.add_parser("compare", help="naive vs agent, healthy, in one short run")
    short.add_argument("--seconds", type=float, default=5.0, help="wrk seconds per run")
    args = parser.parse_args()
    return serve(args) if args.command == "serve" else compare(args)


if __name__ == "__main__":
    sys.exit(main())

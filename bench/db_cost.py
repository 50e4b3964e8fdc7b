"""Cost to the database: statements and connections the agent causes per second on a node, with
no probes and under a probe storm (they must be identical), the naive per-request checker beside
it, and the time one poll takes on the server.

Why: the agent must never pass the probe rate on to MySQL (one poll per interval per node, over
one persistent connection), while a per-request checker turns every LB probe into a login.
Counters are GLOBAL STATUS deltas on n1 (Questions, Com_select, Connections, Threads_connected,
Aborted_connects) read over one persistent connection of our own; our own reads are measured in
a baseline window with no checker running and subtracted. The server-side time of POLL_QUERY
comes from SHOW PROFILES (performance_schema is off on the test bed).

Needs root (a 3-node test bed) and Debian wrk.
Usage: python bench/db_cost.py [--window 20] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import _common
import mysql.connector
from _common import fmt

from galera_health.probe import POLL_QUERY
from galera_health.testbed import GaleraTestbed, TestbedNode

COUNTERS = ("Questions", "Com_select", "Connections", "Aborted_connects", "Threads_connected")
_readers: dict[int, Any] = {}


def _reader(node: TestbedNode, password: str) -> Any:
    connection = _readers.get(node.port)
    if connection is None:
        connection = mysql.connector.connect(
            host=node.host,
            port=node.port,
            user="health",
            password=password,
            connection_timeout=5,
            read_timeout=5,
            write_timeout=5,
            use_pure=True,
            autocommit=True,
        )
        _readers[node.port] = connection
    return connection


def counters(node: TestbedNode, password: str | None = None) -> dict[str, int]:
    """The global counters, read over one persistent connection of our own (one statement)."""
    if password is None:  # naive_checker.py compare: read the test bed's password file
        with open(node.datadir + "/../../monitor_password") as handle:
            password = handle.read().strip()
    cursor = _reader(node, password).cursor()
    names = ", ".join(f"'{n}'" for n in COUNTERS)
    cursor.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
    values = {str(name).lower(): int(value) for name, value in cursor.fetchall()}
    cursor.close()
    return values


def window(
    node: TestbedNode, password: str, seconds: float, during: Callable[[], Any] | None = None
) -> tuple[dict[str, float], Any]:
    """Per-second deltas of the counters over `seconds` (Threads_connected: the level)."""
    before = counters(node, password)
    t0 = time.monotonic()
    extra = None
    if during is not None:
        extra = during()
    else:
        time.sleep(seconds)
    took = time.monotonic() - t0
    after = counters(node, password)
    rates = {k: (after[k] - before[k]) / took for k in before if k != "threads_connected"} | {
        "threads_connected": float(after["threads_connected"])
    }
    return rates, extra


def server_poll_time(node: TestbedNode, password: str, count: int = 100) -> list[float]:
    """Server-side durations (ms) of POLL_QUERY from SHOW PROFILES, on the agent's session
    settings."""
    cursor = _reader(node, password).cursor()
    cursor.execute("SET SESSION wsrep_sync_wait = 0, SESSION max_statement_time = 1")
    cursor.execute("SET SESSION profiling_history_size = 100, SESSION profiling = 1")
    for _ in range(count):
        cursor.execute(POLL_QUERY)
        cursor.fetchall()
    cursor.execute("SHOW PROFILES")
    durations = [float(row[1]) * 1000 for row in cursor.fetchall() if "GLOBAL_STATUS" in row[2]]
    cursor.execute("SET SESSION profiling = 0")
    cursor.close()
    return durations


def client_poll_time(node: TestbedNode, password: str, count: int = 200) -> list[float]:
    cursor = _reader(node, password).cursor()
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        cursor.execute(POLL_QUERY)
        cursor.fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    cursor.close()
    return times


def agent_poll_ms(port: int, node: str, samples: int = 10) -> list[float]:
    values = []
    for _ in range(samples):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
            document = json.load(response)
        value = document["nodes"][node]["poll_ms"]
        if value is not None:
            values.append(float(value))
        time.sleep(1.0)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds per phase (20)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    args = parser.parse_args()
    _common.pin_self()
    print(_common.machine_line(), flush=True)
    bed = GaleraTestbed(3)
    agent = naive = None
    rows: list[list[str]] = []
    try:
        bed.start()
        n1 = bed.node("n1")
        password = bed.monitor_password
        base, _ = window(n1, password, args.window)
        print(f"baseline (no checker; our own reads): {base}", flush=True)

        def row(label: str, rates: dict[str, float], probes: float) -> None:
            net = {k: v - base[k] for k, v in rates.items()}
            rows.append(
                [
                    label,
                    f"{probes:.0f}",
                    fmt(net["questions"]),
                    fmt(net["com_select"]),
                    fmt(net["connections"]),
                    fmt(net["aborted_connects"]),
                    f"{net['threads_connected']:.0f}",
                ]
            )
            print(f"  {label}: probes/s {probes:.0f}, net {net}", flush=True)

        nodes = [f"{n.name}={n.address()}" for n in bed.nodes]
        agent = _common.start_agent(nodes, bed.password_file)
        time.sleep(2)
        rates, _ = window(n1, password, args.window)
        row("agent, 0 probes/s", rates, 0)

        def storm(url: str) -> Callable[[], float]:
            def run() -> float:
                return _common.wrk(url, args.connections, args.window, timeout=1.0).rps

            return run

        rates, rps = window(n1, password, args.window, storm(agent.url()))
        row(f"agent, wrk c={args.connections}", rates, rps)
        poll_ms = agent_poll_ms(agent.port, "n1")
        agent.stop()
        agent = None

        naive = _common.start_naive(n1.host, n1.port, "health", bed.password_file)
        time.sleep(1)
        rates, _ = window(n1, password, args.window)
        row("naive, 0 probes/s", rates, 0)
        rates, rps = window(n1, password, args.window, storm(naive.url()))
        row(f"naive, wrk c={args.connections}", rates, rps)
        naive.kill()
        naive = None

        server_ms = server_poll_time(n1, password)
        client_ms = client_poll_time(n1, password)
    finally:
        if naive is not None:
            naive.kill()
        if agent is not None:
            agent.stop()
        for connection in _readers.values():
            connection.close()
        bed.stop()
    print()
    print(
        _common.table(
            [
                "checker on n1",
                "probes/s",
                "statements/s (Questions)",
                "Com_select/s",
                "connections/s",
                "aborted connects/s",
                "threads connected (net)",
            ],
            rows,
        )
    )
    print()
    print(
        _common.table(
            ["one poll (POLL_QUERY)", "n", "median ms", "p99 ms", "max ms"],
            [
                [name, str(len(v)), fmt(_common.median(v), 3), fmt(_common.percentile(v, 0.99), 3),
                 fmt(max(v, default=float("nan")), 3)]
                for name, v in (
                    ("on the server (SHOW PROFILES)", server_ms),
                    ("round trip from a Python client (pure driver)", client_ms),
                    ("agent's own poll_ms (/status, incl. evaluate)", poll_ms),
                )
            ],
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cost of the writer election to the cluster: replicated writes, statements and connections per
second that `--writer` adds, one agent per node of a 3-node test bed, with default settings.

Why: the lease is meant to cost about one replicated write per poll interval (the holder's
renewal) and one read per interval per other node, over one more persistent connection per node.
Counters are GLOBAL STATUS deltas summed over the three nodes (wsrep_replicated: write sets this
node sent to the cluster; Com_update, Com_select, Connections), read over a root connection of
our own per node (its reads are the same in both windows and cancel out in the difference):
first a window with health-only agents, then the same window with `--writer` agents.

Needs root (a 3-node test bed).
Usage: python bench/writer_cost.py [--window 30]
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
from _common import fmt

from galera_health.config import load_settings
from galera_health.lease_sql import GRANT
from galera_health.testbed import GaleraTestbed, TestbedNode

COUNTERS = ("wsrep_replicated", "Com_update", "Com_select", "Com_insert", "Connections")
USER = "gh_writer"


def counters(nodes: list[TestbedNode]) -> dict[str, int]:
    totals = dict.fromkeys(COUNTERS, 0)
    for node in nodes:
        for name, value in node.statuses(list(COUNTERS)).items():
            totals[name] += int(value)
    return totals


def window(bed: GaleraTestbed, extra: list[str], seconds: float) -> dict[str, float]:
    agents = [
        _common.start_agent(
            [f"{n.name}={n.address()}"],
            bed.password_file,
            user=USER,
            extra=extra,
            cpu=None,
            name=f"cost-{n.name}",
        )
        for n in bed.nodes
    ]
    try:
        if extra:
            deadline = time.monotonic() + 30
            while not any(_common.get(a.port, "/writer")[0] == 200 for a in agents):
                if time.monotonic() > deadline:
                    raise RuntimeError("no writer elected within 30 s")
                time.sleep(0.1)
        time.sleep(3.0)  # past the start-up (table creation, first polls)
        before = counters(bed.nodes)
        started = time.monotonic()
        time.sleep(seconds)
        after = counters(bed.nodes)
        took = time.monotonic() - started
    finally:
        for agent in agents:
            agent.stop()
    return {name: (after[name] - before[name]) / took for name in COUNTERS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window (30)")
    args = parser.parse_args()
    print(_common.machine_line())
    with GaleraTestbed(3) as bed:
        bed.create_account(USER, GRANT)
        health = window(bed, [], args.window)
        writer = window(bed, ["--writer"], args.window)
    rows = [
        [name, fmt(health[name], 2), fmt(writer[name], 2), fmt(writer[name] - health[name], 2)]
        for name in COUNTERS
    ]
    settings = load_settings({"nodes": ["127.0.0.1"], "user": USER}, {})
    print(
        f"3 nodes, one agent per node, default settings (poll every {settings.interval:g} s, "
        f"lease every {settings.writer_interval:g} s), {args.window:g} s windows, per second "
        "summed over the nodes:"
    )
    print(_common.table(["counter", "health only", "--writer", "added"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hot rows through a load balancer: a write rule on /writer against one on /health, and the
failed transactions per fault on the writer.

Why: Galera certifies concurrent writes to the same rows from different nodes and fails all but
one at commit (error 1213). Without a proxy, the LB can still send writes to one node at a time
if exactly one agent answers 200 on /writer (issue 12). This measures what a client gets.

Set-up: a 3-node test bed, one agent per node with --writer and otherwise default settings
(bench/_common.py's WriterAgents: the monitor account polls, a writer account holds the lease). One
real HAProxy (testkit.haproxy: TCP mode, inter 1 s, fastinter 250 ms, fall 2, rise 2, retries 0, no
redispatch, established sessions never cut) with two listeners over the same three nodes:
`lb_health` checks `GET /health` (round robin over every usable node), `lb_writer` checks `GET
/writer`. --workers client threads, each a NEW connection per transaction (as behind an Azure LB),
every transaction `UPDATE`s two of --rows hot rows in key order (BEGIN; UPDATE a; UPDATE b; COMMIT;
in key order, so that on one node they wait for each other's locks and never deadlock: a 1213 is a
certification conflict between nodes), 2 s deadlines.

1. --seconds of the workload through `lb_health`, then the same through `lb_writer`: committed
   transactions per second, the share that failed with 1213, other failures.
2. Per writer fault (maintenance, a planned `writer handover` to another node, drain of its
   agent, its agent killed, freeze, kill -9), through
   `lb_writer`: --warm s of traffic, inject on the node that is the writer, hold --hold s,
   restore, wait until the cluster is whole: failed transactions from the injection to the end
   of the hold, by error, and the longest run of seconds without a commit.

Needs root (a 3-node test bed) and /usr/sbin/haproxy.
Usage: python bench/writer_lb.py [--seconds 30] [--workers 8] [--rows 3] [--hold 10]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

import _common
import mysql.connector

from galera_health.testbed import GaleraTestbed
from testkit.haproxy import HAProxy, Listener, free_port

CLIENT = ("hot_bench", "hot-bench-pw-5e1")
AGENT_USER = "gh_writer"
FAULTS = ["maintenance", "handover", "drain", "agent_killed", "freeze", "kill9"]


@dataclass(frozen=True)
class Result:
    at: float  # monotonic, when the transaction began
    error: str | None  # None committed; "1213", another errno, or "timeout"


class HotRows:
    """--workers threads updating the same few rows through one LB port."""

    def __init__(self, port: int, workers: int, rows: int) -> None:
        self.port, self.workers, self.rows = port, workers, rows
        self.results: list[Result] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> HotRows:
        for index in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"hot-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return list(self.results)

    def _loop(self) -> None:
        chooser = random.Random()
        while not self._stop.is_set():
            # in key order: on one node two transactions wait for each other's lock instead of
            # deadlocking, so every 1213 left is a certification conflict between nodes
            first, second = sorted(chooser.sample(range(1, self.rows + 1), 2))
            began = time.monotonic()
            error = self._transaction(first, second)
            with self._lock:
                self.results.append(Result(began, error))
            if error is not None and error not in ("1213",):
                self._stop.wait(0.05)  # a refused connection must not spin

    def _transaction(self, first: int, second: int) -> str | None:
        connection = None
        try:
            connection = mysql.connector.connect(
                host="127.0.0.1",
                port=self.port,
                user=CLIENT[0],
                password=CLIENT[1],
                use_pure=True,
                connection_timeout=2,
                read_timeout=2,
                write_timeout=2,
                autocommit=False,
            )
            cursor = connection.cursor()
            cursor.execute("UPDATE hot.rows SET v = v + 1 WHERE id = %s", (first,))
            cursor.execute("UPDATE hot.rows SET v = v + 1 WHERE id = %s", (second,))
            connection.commit()
            return None
        except mysql.connector.Error as exc:
            if exc.errno:
                return str(exc.errno)
            return "timeout" if "timed out" in str(exc) else type(exc).__name__
        except OSError as exc:
            return type(exc).__name__
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):  # closing a broken connection
                    connection.shutdown()


def longest_gap(results: list[Result], start: float, end: float) -> float:
    commits = sorted(r.at for r in results if r.error is None and start <= r.at <= end)
    edges = [start, *commits, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--warm", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    print(_common.machine_line())
    with GaleraTestbed(3) as bed:
        n1 = bed.nodes[0]
        agents = _common.WriterAgents(bed, AGENT_USER, label="writer-lb")
        n1.sql(
            f"CREATE USER IF NOT EXISTS '{CLIENT[0]}'@'127.0.0.1' IDENTIFIED BY '{CLIENT[1]}';"
            f" GRANT ALL ON hot.* TO '{CLIENT[0]}'@'127.0.0.1';"
            " CREATE DATABASE IF NOT EXISTS hot;"
            " CREATE TABLE IF NOT EXISTS hot.rows (id INT PRIMARY KEY, v BIGINT NOT NULL);"
            " INSERT IGNORE INTO hot.rows VALUES "
            + ", ".join(f"({i}, 0)" for i in range(1, args.rows + 1))
        )
        backends = agents.backends()
        listeners = [
            Listener("lb_health", "health", free_port(), backends),
            Listener("lb_writer", "writer", free_port(), backends),
        ]

        def whole() -> None:
            agents.whole()
            lb.wait(
                lambda states: all(
                    s.status == "UP" for key, s in states.items() if key[0] == "lb_health"
                ),
                60,
                "every server UP in lb_health",
            )

        try:
            agents.start_all()
            with HAProxy(listeners) as lb:
                whole()  # the read rule's servers all UP (the write rule has one)
                agents.writer()
                print(
                    f"\n1. {args.workers} workers, a new connection per transaction, each "
                    f"updating 2 of {args.rows} rows, {args.seconds:g} s per rule:"
                )
                rows = []
                for listener in ("lb_health", "lb_writer"):
                    load = HotRows(lb.port(listener), args.workers, args.rows).start()
                    time.sleep(args.seconds)
                    results = load.stop()
                    errors = Counter(r.error for r in results if r.error is not None)
                    committed = sum(1 for r in results if r.error is None)
                    total = len(results)
                    rows.append(
                        [
                            f"`{listener}` (GET /{listener[3:]})",
                            f"{committed / args.seconds:.1f}",
                            f"{100 * errors.get('1213', 0) / max(total, 1):.1f} %",
                            str(errors.get("1213", 0)),
                            ", ".join(f"{k} x{v}" for k, v in errors.items() if k != "1213") or "0",
                        ]
                    )
                print(
                    _common.table(
                        ["rule", "committed/s", "1213 share", "1213", "other failures"], rows
                    )
                )
                print(f"\n2. Faults on the writer, through `lb_writer`, hold {args.hold:g} s:")
                rows = []
                for fault in [f.strip() for f in args.faults.split(",") if f.strip()]:
                    whole()
                    old = agents.writer()
                    load = HotRows(lb.port("lb_writer"), args.workers, args.rows).start()
                    time.sleep(args.warm)
                    injected = time.monotonic()
                    node = bed.node(old)
                    marker = agents.maintenance_file(old)
                    if fault == "maintenance":
                        open(marker, "w").close()
                    elif fault == "handover":
                        target = next(n.name for n in bed.nodes if n.name != old)
                        agents.handover(target)
                    elif fault == "drain":
                        os.kill(agents.agents[old].pid, signal.SIGTERM)
                    elif fault == "agent_killed":
                        os.kill(agents.agents[old].pid, signal.SIGKILL)
                    elif fault == "freeze":
                        node.freeze()
                    elif fault == "kill9":
                        node.kill()
                    time.sleep(args.hold)
                    ended = time.monotonic()
                    results = load.stop()
                    if fault == "maintenance":
                        os.unlink(marker)
                    elif fault in ("drain", "agent_killed"):
                        agents.stop(old)
                        agents.start(old)
                    elif fault == "freeze":
                        node.thaw()
                    window = [r for r in results if injected <= r.at <= ended]
                    errors = Counter(r.error for r in window if r.error is not None)
                    committed = sum(1 for r in window if r.error is None)
                    rows.append(
                        [
                            fault,
                            old,
                            str(committed),
                            str(sum(errors.values())),
                            ", ".join(f"{k} x{v}" for k, v in errors.most_common()) or "-",
                            f"{longest_gap(results, injected, ended):.1f}",
                        ]
                    )
                    print(f"  {fault}: done", flush=True)
                whole()
                print(
                    _common.table(
                        [
                            "fault on the writer",
                            "writer",
                            "committed",
                            "failed",
                            "failures by error",
                            "longest s without a commit",
                        ],
                        rows,
                    )
                )
        finally:
            agents.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

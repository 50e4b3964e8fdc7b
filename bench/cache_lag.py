"""Cache lag: from a fact the node reports becoming true to the agent's first 503, with a random
phase against the poll schedule, per poll interval; and what each interval costs the node
(statements and connections per second) and the agent (CPU).

Why: the HTTP answer is only as fresh as the last poll. A fact that is true at once on the node
(wsrep_desync=ON, read_only=ON, wsrep_reject_queries=ALL) reaches /health after the rest of the
current interval plus one poll, so the interval is the lag a load balancer adds on top of its own
check period (issue 11: at interval 1 s, a median 0.46 s and at most 0.96 s). The target is at
most 0.45 s at any phase, by default.

Each round: wait until /health is 200, sleep a random 0-2 intervals (so the injection lands at a
random phase of the poll), send the SET over a root session held open on n1's Unix socket, then
GET /health/n1 on a fresh connection every --poll-ms until it is 503. The lag is counted from the
moment the SET was sent (conservative: the fact is true somewhere between sending and the
answer; the SET's own duration is printed too). Then the fact is undone and the next round
starts. The agent watches n1 only, with every setting at its default except --interval.

Cost, per interval, with the agent idle (no probes): GLOBAL STATUS deltas on n1 (Questions,
Connections) over --window seconds minus our own reads (bench/db_cost.py's method), and the
agent's CPU from /proc (utime + stime).

Needs root (a 3-node test bed).
Usage: python bench/cache_lag.py [--intervals 1,0.25] [--rounds 20] [--window 30] [--poll-ms 2]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time

import _common
import db_cost
from _common import cpu_percent, fmt, median, percentile, proc_sample

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import ServerProcess

FACTS = {
    "desync": ("SET GLOBAL wsrep_desync = ON", "SET GLOBAL wsrep_desync = OFF"),
    "read_only": ("SET GLOBAL read_only = ON", "SET GLOBAL read_only = OFF"),
    "reject_queries": (
        "SET GLOBAL wsrep_reject_queries = ALL",
        "SET GLOBAL wsrep_reject_queries = NONE",
    ),
}
TARGET = 0.45


class RootSession:
    """One `mariadb` client kept open as root on the node's socket: a statement costs a round
    trip, not a process start (which would blur the injection time by tens of ms)."""

    def __init__(self, node: TestbedNode) -> None:
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [
                "mariadb", "--no-defaults", f"--socket={node.socket}", "--user=root",
                "--batch", "--skip-column-names", "--unbuffered", "--force",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
            bufsize=1,
        )  # fmt: skip
        self.count = 0

    def run(self, statement: str) -> tuple[float, float]:
        """(monotonic time sent, seconds until the server answered)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.count += 1
        marker = f"done-{self.count}"
        sent = time.monotonic()
        self.process.stdin.write(f"{statement};\nSELECT '{marker}';\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if not line:
                self.errors.seek(0)
                raise RuntimeError(f"root session ended: {self.errors.read().decode()[-500:]}")
            if line.strip() == marker:
                return sent, time.monotonic() - sent

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.errors.close()


def wait_healthy(agent: ServerProcess, path: str) -> None:
    """200 three times in a row: read_only OFF desyncs the node for a moment."""
    streak, deadline = 0, time.monotonic() + 60
    while streak < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not become healthy again")
        streak = streak + 1 if _common.get(agent.port, path)[0] == 200 else 0
        time.sleep(0.02)


def lag_rounds(
    agent: ServerProcess,
    session: RootSession,
    fact: str,
    rounds: int,
    interval: float,
    poll: float,
) -> tuple[list[float], list[float]]:
    inject, undo = FACTS[fact]
    lags, set_times = [], []
    for _ in range(rounds):
        wait_healthy(agent, "/health/n1")
        time.sleep(random.uniform(0, 2 * interval))
        sent, took = session.run(inject)
        while True:
            status, _ = _common.get(agent.port, "/health/n1", timeout=1.0)
            if status == 503:
                lags.append(time.monotonic() - sent)
                break
            if time.monotonic() - sent > 10:
                raise RuntimeError(f"{fact}: no 503 within 10 s")
            time.sleep(poll)
        set_times.append(took)
        session.run(undo)
    return lags, set_times


def cost(
    agent: ServerProcess, node: TestbedNode, password: str, seconds: float
) -> tuple[float, float, float]:
    """(statements/s, connections/s on the node caused by the agent, agent CPU %), idle."""
    before = proc_sample(agent.pid)
    rates, _ = db_cost.window(node, password, seconds)
    after = proc_sample(agent.pid)
    return rates["questions"], rates["connections"], cpu_percent(before, after)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intervals", default="1,0.25", help="poll intervals to compare")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per fact (20)")
    parser.add_argument("--facts", default=",".join(FACTS), help="facts to inject")
    parser.add_argument("--window", type=float, default=30.0, help="cost window, s (30)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="GET cadence, ms (2)")
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",")]
    facts = [f for f in args.facts.split(",") if f]
    _common.pin_self()
    print(_common.machine_line(), flush=True)
    bed = GaleraTestbed(3)
    agent = None
    session = None
    lag_rows: list[list[str]] = []
    cost_rows: list[list[str]] = []
    try:
        bed.start()
        n1 = bed.node("n1")
        password = bed.monitor_password
        session = RootSession(n1)
        # our own reads of the counters, with no agent running, to subtract
        own, _ = db_cost.window(n1, password, args.window)
        for interval in intervals:
            agent = _common.start_agent(
                [f"n1={n1.address()}"], bed.password_file, extra=["--interval", str(interval)]
            )
            time.sleep(2)
            questions, connections, cpu = cost(agent, n1, password, args.window)
            cost_rows.append(
                [
                    f"{interval:g} s",
                    fmt(questions - own["questions"]),
                    fmt(connections - own["connections"]),
                    fmt(cpu, 1),
                ]
            )
            print(f"interval {interval:g} s: cost {cost_rows[-1][1:]}", flush=True)
            every: list[float] = []
            for fact in facts:
                lags, set_times = lag_rounds(
                    agent, session, fact, args.rounds, interval, args.poll_ms / 1000
                )
                every += lags
                lag_rows.append(
                    [
                        f"{interval:g} s",
                        fact,
                        str(len(lags)),
                        fmt(median(lags)),
                        fmt(percentile(lags, 0.95)),
                        fmt(max(lags)),
                        fmt(median(set_times) * 1000, 1),
                    ]
                )
                print(" | ".join(lag_rows[-1]), flush=True)
            lag_rows.append(
                [
                    f"{interval:g} s",
                    "**all**",
                    str(len(every)),
                    fmt(median(every)),
                    fmt(percentile(every, 0.95)),
                    fmt(max(every)),
                    "",
                ]
            )
            verdict = "meets" if max(every) <= TARGET else "misses"
            print(f"interval {interval:g} s {verdict} the {TARGET} s target", flush=True)
            agent.stop()
            agent = None
    finally:
        if agent is not None:
            agent.stop()
        if session is not None:
            session.close()
        bed.stop()
    print()
    print(
        _common.table(
            ["interval", "fact", "rounds", "median s", "p95 s", "max s", "SET ms (median)"],
            lag_rows,
        )
    )
    print()
    print(
        _common.table(
            ["interval", "statements/s on the node", "connections/s", "agent CPU % (idle)"],
            cost_rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

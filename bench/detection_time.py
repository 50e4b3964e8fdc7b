"""Detection time per fault: from injection to the agent's first 503, and from recovery to its
first 200, over many cycles, against the bound the configuration promises.

Why: a load balancer takes a node out only as fast as its health check notices. Each fault
(clean stop, kill -9, freeze, split, desync, wsrep_reject_queries=ALL, a server that never
greets, a blackhole) is injected on a real 3-node test bed while GET /health/<node> is polled
every --poll-ms on a fresh connection (as an LB does). The no-greeting and blackhole faults go
through testkit.fault_servers.SwitchProxy in front of n2 (node "px"); the others hit n3 directly.
After the first 503 the fault is held --dwell seconds, then recovered.

Agent settings: the defaults (interval 1 s, connect/read timeout 2 s, hold-down 2 x
evs.suspect_timeout = 6 s on the test bed's PT3S). Slow faults (stop, kill -9: a restart and IST
per cycle) run --slow-cycles times to keep the whole script under ~15 min.

Needs root (a 3-node test bed).
Usage: python bench/detection_time.py [--cycles 10] [--slow-cycles 5] [--faults freeze,desync]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _common
from _common import fmt

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import AgentProcess
from testkit.fault_servers import SwitchProxy

INTERVAL, CONNECT, READ, HOLD_DOWN = 1.0, 2.0, 2.0, 6.0
EVS_SUSPECT, EVS_INACTIVE = 3.0, 6.0


@dataclass
class Fault:
    name: str
    node: str  # agent node name polled
    inject: Callable[[], object]
    recover: Callable[[], object]
    bound_down: str
    bound_down_s: float
    bound_up: str
    bound_up_s: float
    slow: bool = False
    down: list[float] = field(default_factory=list)
    up: list[float] = field(default_factory=list)
    misses: int = 0


def background(action: Callable[[], object]) -> threading.Thread:
    """Run a blocking injection (stop(), start()) while the main thread polls."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            errors.append(exc)
            print(f"    background action failed: {exc}", flush=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def first(
    port: int, path: str, want_ok: bool, poll: float, limit: float
) -> tuple[float | None, str]:
    """Seconds until GET path is 200 (want_ok) or a non-200 (not want_ok), and that answer's
    body; None past limit."""
    started = time.monotonic()
    while True:
        status, body = _common.get(port, path, timeout=1.0)
        now = time.monotonic() - started
        if (status == 200) == want_ok and status != 0:
            return now, f"{status} {body.strip()}"
        if now > limit:
            return None, f"{status} {body.strip()}"
        time.sleep(max(0.0, poll - (time.monotonic() - started - now)))


def settle(bed: GaleraTestbed, agent: AgentProcess, nodes: list[str]) -> None:
    for node in bed.nodes:
        if not node.is_running():
            node.start()
    for node in bed.nodes:
        node.wait_synced(timeout=180)
    for name in nodes:
        agent.wait_for(lambda a: a.status == 200, f"/health/{name}", timeout=60)
    time.sleep(1.5)  # a few healthy polls: the fault starts from a steady state


def faults(bed: GaleraTestbed, proxy: SwitchProxy) -> list[Fault]:
    n3 = bed.node("n3")

    def sql(node: TestbedNode, statement: str) -> Callable[[], object]:
        return lambda: node.sql(statement)

    def kill9() -> None:
        assert n3.pid is not None
        os.kill(n3.pid, signal.SIGKILL)

    def restart() -> None:
        n3.kill()  # reaps a SIGKILLed process; no-op after a clean stop
        n3.start()

    refused = f"interval {INTERVAL:g} s"
    stalled = f"interval + read timeout = {INTERVAL + READ:g} s"
    # the hold-down counts from the first good poll (up to one interval after the recovery) and
    # ends at the first poll past it (up to one more)
    hold = f"2 x interval + hold-down = {2 * INTERVAL + HOLD_DOWN:g} s"
    return [
        Fault("clean stop", "n3", lambda: background(n3.stop).join(), restart,
              refused + " (+ shutdown)", INTERVAL, "node restart + IST + interval", float("nan"),
              slow=True),
        Fault("kill -9", "n3", kill9, restart, refused, INTERVAL,
              "node restart + IST + interval", float("nan"), slow=True),
        Fault("freeze (SIGSTOP)", "n3", n3.freeze, n3.thaw, stalled, INTERVAL + READ,
              hold + ", or eviction seen + rejoin", 2 * INTERVAL + HOLD_DOWN),
        Fault("split (gmcast.isolate)", "n3", lambda: n3.isolate(True), lambda: n3.isolate(False),
              f"evs.inactive_timeout {EVS_INACTIVE:g} s + interval", EVS_INACTIVE + INTERVAL,
              "rejoin + interval", float("nan")),
        Fault("desync", "n3", sql(n3, "SET GLOBAL wsrep_desync=ON"),
              sql(n3, "SET GLOBAL wsrep_desync=OFF"), refused, INTERVAL, refused, INTERVAL),
        Fault("reject_queries=ALL", "n3", sql(n3, "SET GLOBAL wsrep_reject_queries=ALL"),
              sql(n3, "SET GLOBAL wsrep_reject_queries=NONE"), refused, INTERVAL,
              refused, INTERVAL),
        Fault("no-greeting server", "px", lambda: proxy.set_mode("silent"),
              lambda: proxy.set_mode("forward"), stalled, INTERVAL + READ, hold,
              2 * INTERVAL + HOLD_DOWN),
        Fault("blackhole", "px", lambda: proxy.set_mode("blackhole"),
              lambda: proxy.set_mode("forward"), stalled, INTERVAL + READ, hold,
              2 * INTERVAL + HOLD_DOWN),
    ]  # fmt: skip


def cycle(fault: Fault, agent: AgentProcess, poll: float, dwell: float) -> None:
    path = f"/health/{fault.node}"
    thread: threading.Thread | None = None
    t0 = time.monotonic()
    if fault.slow:
        thread = background(fault.inject)  # stop() blocks until mariadbd exited
    else:
        fault.inject()
    down, said = first(agent.port, path, want_ok=False, poll=poll, limit=60)
    if thread is not None:
        thread.join(60)
    if down is None:
        fault.misses += 1
        print(f"    {fault.name}: no 503 within 60 s", flush=True)
    else:
        fault.down.append(down)
    time.sleep(dwell)
    thread = background(fault.recover)
    up, _ = first(agent.port, path, want_ok=True, poll=poll, limit=120)
    thread.join(120)
    if up is None:
        fault.misses += 1
        print(f"    {fault.name}: no 200 within 120 s of recovery", flush=True)
    else:
        fault.up.append(up)
    print(
        f"  {fault.name:24} 503 after {fmt(down if down is not None else float('nan'))} s,"
        f" 200 after {fmt(up if up is not None else float('nan'))} s"
        f" (cycle {time.monotonic() - t0:.0f} s): {said[:90]}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=10, help="cycles per fault (10)")
    parser.add_argument("--slow-cycles", type=int, default=5, help="cycles of stop/kill -9 (5)")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="GET interval (25 ms)")
    parser.add_argument("--dwell", type=float, default=1.0, help="fault held after the 503 (1 s)")
    parser.add_argument("--faults", help="comma-separated subset, e.g. freeze,desync (all)")
    args = parser.parse_args()
    _common.pin_self()
    print(_common.machine_line(), flush=True)
    bed = GaleraTestbed(3)
    proxy: SwitchProxy | None = None
    agent: AgentProcess | None = None
    chosen: list[Fault] = []
    started = time.monotonic()
    try:
        bed.start()
        n2 = bed.node("n2")
        proxy = SwitchProxy((n2.host, n2.port))
        nodes = [f"{n.name}={n.address()}" for n in bed.nodes] + [f"px=127.0.0.1:{proxy.port}"]
        agent = _common.start_agent(nodes, bed.password_file)
        names = ["n1", "n2", "n3", "px"]
        chosen = [
            f
            for f in faults(bed, proxy)
            if not args.faults or any(k.strip() in f.name for k in args.faults.split(","))
        ]
        for fault in chosen:
            count = args.slow_cycles if fault.slow else args.cycles
            for _ in range(count):
                settle(bed, agent, names)
                try:
                    cycle(fault, agent, args.poll_ms / 1000, args.dwell)
                finally:
                    if bed.node("n3").frozen:
                        bed.node("n3").thaw()
                    proxy.set_mode("forward")
    finally:
        if bed.node("n3").frozen:
            bed.node("n3").thaw()
        if agent is not None:
            agent.stop()
        if proxy is not None:
            proxy.close()
        bed.stop()
    print(f"\ntotal {time.monotonic() - started:.0f} s; poll every {args.poll_ms:g} ms\n")
    rows = []
    for f in chosen:
        rows.append(
            [
                f.name,
                str(len(f.down)),
                fmt(_common.median(f.down)),
                fmt(max(f.down, default=float("nan"))),
                f.bound_down,
                fmt(_common.median(f.up)),
                fmt(max(f.up, default=float("nan"))),
                f.bound_up,
                str(f.misses),
            ]
        )
    print(
        _common.table(
            [
                "fault",
                "cycles",
                "to 503 median s",
                "max s",
                "bound",
                "to 200 median s",
                "max s",
                "bound",
                "misses",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

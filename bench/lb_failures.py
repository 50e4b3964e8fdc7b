"""Client-visible failed transactions per fault through HAProxy: the agent's HTTP check against
the LB's plain TCP check on the MySQL port (what many Azure set-ups start with), in the same run;
HAProxy's agent-check beside them.

Why: the agent is right about the node; what its users live with is the database client behind
the load balancer. This counts what that client sees.

Set-up: a 3-node test bed, one agent per node at its defaults (as deployed: each next to its
database). One real HAProxy (testkit.haproxy: TCP mode, inter 1 s, fastinter 250 ms, fall 2,
rise 2 (docs/benchmarks.md's section 8 figures were measured with fall 1, rise 1), check timeout
1 s, retries 0, no redispatch, established sessions never cut) with listeners side by side over
the same three nodes: `lb_agent` checks `GET /health` on the node's agent, `lb_agent_check` has a
TCP check of the MySQL port plus `agent-check` on the agent's agent-check port, `lb_tcp` only
connects to the MySQL port. The client workload (testkit.workload) goes through both at once: a new
connection per transaction (a read and an insert, 2 s deadlines), --period apart per listener;
HAProxy's session log says which node got each one.

Per fault and round, on a rotating node: --warm s of traffic, inject, hold --hold s, restore,
wait until both listeners have every server UP and the cluster is whole, --settle s more. The
planned restart follows the README runbook (maintenance on, wait until `lb_agent` has the node
out, clean stop, start, Synced, maintenance off); `lb_tcp` meets it as a plain stop.

Printed per fault and check: failed transactions (those on the faulty node, and those on the
other nodes, which a whole-cluster pause such as a rejoin or an eviction causes), seconds from
injection until the LB took the node out, and transactions the LB sent to the node during the
fault (served or not), and the slowest transaction on the other nodes after the injection (a
whole-cluster pause: Galera holds every commit while the group's membership changes).

Needs root (a 3-node test bed) and /usr/sbin/haproxy.
Usage: python bench/lb_failures.py [--rounds 2] [--hold 12] [--faults stop,kill9,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _common

from galera_health.testbed import DEFAULT_PROVIDER_OPTIONS, GaleraTestbed, TestbedNode
from testkit.agent import ServerProcess
from testkit.haproxy import Backend, HAProxy, Listener, free_port
from testkit.workload import Workload, attribute, missing_acks, prepare, wait_logged

CLIENT = ("lb_bench", "lb-bench-pw-9d2")
LISTENERS = {"lb_agent": "health", "lb_agent_check": "agent", "lb_tcp": "tcp"}
LABELS = {
    "lb_agent": "agent, GET /health",
    "lb_agent_check": "agent-check + TCP",
    "lb_tcp": "TCP connect only",
}
FAULTS = [
    "stop",
    "kill9",
    "freeze",
    "split",
    "desync",
    "read_only",
    "reject_queries",
    "planned_restart",
]


@dataclass
class Cell:
    """One fault, one check style, all rounds."""

    failed_node: list[int] = field(default_factory=list)
    failed_other: list[int] = field(default_factory=list)
    out_after: list[float] = field(default_factory=list)  # nan: never taken out
    sent_during: list[int] = field(default_factory=list)
    transactions: list[int] = field(default_factory=list)
    slowest_other: list[float] = field(default_factory=list)  # on the other nodes, after injection


def whole(bed: GaleraTestbed, timeout: float = 180.0) -> None:
    """Every node Synced and counting every other."""
    deadline = time.monotonic() + timeout
    size = str(len(bed.nodes))
    for node in bed.nodes:
        node.wait_synced(timeout=timeout)
    while any(node.status("wsrep_cluster_size") != size for node in bed.nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the test bed did not become whole again")
        time.sleep(0.25)


def run_cli(*args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [_common.PYTHON, "-m", "galera_health", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=None if env is None else {**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"galera-health {' '.join(args)}: {done.stderr.strip()}")


def fault_actions(
    name: str, node: TestbedNode, lb: HAProxy, state_dir: str
) -> tuple[Callable[[], None], Callable[[], None], bool]:
    """(inject, restore, hold) for a fault on `node`."""

    def sql(statement: str) -> Callable[[], None]:
        return lambda: (node.sql(statement), None)[1]

    def restart() -> None:
        node.start()
        node.wait_synced(timeout=180)

    watched = {"GALERA_HEALTH_NODES": f"{node.name}={node.address()}"}  # what its agent watches

    def planned() -> None:
        run_cli("maintenance", "on", "--node", node.name, "--state-dir", state_dir, env=watched)
        lb.wait_routed(node.name, False, timeout=15, listeners=["lb_agent", "lb_agent_check"])
        lb.wait(
            lambda s: (
                s[("lb_agent", node.name)].sessions == 0
                and s[("lb_agent_check", node.name)].sessions == 0
            ),
            timeout=15,
            what="no session left",
        )
        node.stop()
        node.start()
        node.wait_synced(timeout=180)
        run_cli("maintenance", "off", "--node", node.name, "--state-dir", state_dir, env=watched)

    actions: dict[str, tuple[Callable[[], None], Callable[[], None], bool]] = {
        "stop": (node.stop, restart, True),
        "kill9": (node.kill, restart, True),
        "freeze": (node.freeze, node.thaw, True),
        "split": (lambda: node.isolate(True), lambda: node.isolate(False), True),
        "desync": (
            sql("SET GLOBAL wsrep_desync = ON"),
            sql("SET GLOBAL wsrep_desync = OFF"),
            True,
        ),
        "read_only": (sql("SET GLOBAL read_only = ON"), sql("SET GLOBAL read_only = OFF"), True),
        "reject_queries": (
            sql("SET GLOBAL wsrep_reject_queries = ALL"),
            sql("SET GLOBAL wsrep_reject_queries = NONE"),
            True,
        ),
        "planned_restart": (planned, lambda: None, False),
    }
    return actions[name]


def one_round(
    name: str,
    node: TestbedNode,
    bed: GaleraTestbed,
    lb: HAProxy,
    state_dir: str,
    args: argparse.Namespace,
    cells: dict[str, Cell],
) -> None:
    whole(bed)
    lb.wait_all_up(timeout=120)
    first_counter = lb.next_counter()
    targets = {listener.name: ("127.0.0.1", listener.port) for listener in lb.listeners}
    load = Workload(targets, *CLIENT, period=args.period).start()
    inject, restore, hold = fault_actions(name, node, lb, state_dir)
    try:
        time.sleep(args.warm)
        injected, injected_wall = time.monotonic(), time.time()
        inject()
        if hold:
            time.sleep(args.hold)
        restore()
        restored_wall = time.time()
        whole(bed)
        lb.wait_all_up(timeout=120)
        time.sleep(args.settle)
    finally:
        outcomes = load.stop()
    sessions = wait_logged(outcomes, lb, first_counter, timeout=60)
    outcomes = attribute(outcomes, sessions)
    for other in bed.nodes:
        missing = missing_acks(outcomes, load.run, other.sql)
        if missing:
            raise RuntimeError(f"{other.name} lacks {len(missing)} acknowledged inserts")
    out: dict[str, float] = {}
    for change in lb.transitions():
        if change.server == node.name and change.monotonic >= injected and change.status != "UP":
            out.setdefault(change.listener, change.monotonic - injected)
    for listener, cell in cells.items():
        mine = [o for o in outcomes if o.target == listener]
        failed = [o for o in mine if not o.ok]
        cell.failed_node.append(sum(1 for o in failed if o.server == node.name))
        cell.failed_other.append(sum(1 for o in failed if o.server != node.name))
        cell.out_after.append(out.get(listener, float("nan")))
        cell.sent_during.append(
            sum(
                1
                for o in mine
                if o.server == node.name
                and o.accepted is not None
                and injected_wall <= o.accepted <= restored_wall
            )
        )
        cell.transactions.append(len(mine))
        cell.slowest_other.append(
            max(
                (o.seconds for o in mine if o.server != node.name and o.started >= injected_wall),
                default=float("nan"),
            )
        )
        print(
            f"  {name:16} {node.name} {listener:9} failed {len(failed):3}"
            f" (on {node.name} {cell.failed_node[-1]}, elsewhere {cell.failed_other[-1]})"
            f"  out after {_common.fmt(cell.out_after[-1])} s"
            f"  sent to {node.name} during the fault {cell.sent_during[-1]}"
            f"  of {len(mine)}, slowest elsewhere {_common.fmt(cell.slowest_other[-1])} s",
            flush=True,
        )
        for o in failed:
            print(f"      {o.describe()} (+{o.started - injected_wall:.2f} s)")


def median(values: list[float]) -> str:
    real = [v for v in values if v == v]
    if not real:
        return "never"
    text = f"{statistics.median(real):.1f}"
    return text if len(real) == len(values) else f"{text} ({len(values) - len(real)}x never)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hold", type=float, default=12.0, help="seconds a fault is held")
    parser.add_argument("--warm", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--period", type=float, default=0.1, help="seconds between transactions")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument(
        "--provider-options",
        default="",
        help="more wsrep_provider_options for the test bed, e.g. evs.join_retrans_period=PT0.2S",
    )
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    print(_common.machine_line())
    print(f"command: python bench/{' '.join(sys.argv)}".replace("bench/bench/", "bench/"))
    options = ";".join(o for o in (DEFAULT_PROVIDER_OPTIONS, args.provider_options) if o)
    print(f"wsrep_provider_options: {options}")
    bed = GaleraTestbed(3, provider_options=options)
    agents: list[ServerProcess] = []
    results: dict[str, dict[str, Cell]] = {}
    with tempfile.TemporaryDirectory(prefix="lb-bench-state-") as state_root:
        try:
            bed.start()
            prepare([n.sql for n in bed.nodes], *CLIENT)
            check_ports = {node.name: free_port() for node in bed.nodes}
            for node in bed.nodes:
                os.mkdir(f"{state_root}/{node.name}")
                agents.append(
                    _common.start_agent(
                        [f"{node.name}={node.address()}"],
                        bed.password_file,
                        user=bed.monitor_user,
                        extra=[
                            "--state-dir",
                            f"{state_root}/{node.name}",
                            "--agent-check-listen",
                            f"127.0.0.1:{check_ports[node.name]}",
                        ],
                        cpu=None,
                        name=f"agent-{node.name}",
                    )
                )
            backends = [
                Backend(n.name, n.host, n.port, a.port, check_ports[n.name])
                for n, a in zip(bed.nodes, agents, strict=True)
            ]
            listeners = [
                Listener(name, style, free_port(), backends) for name, style in LISTENERS.items()
            ]
            with HAProxy(listeners) as lb:
                print("haproxy sections:\n" + lb.sections)
                turn = 0
                for name in faults:
                    results[name] = {listener: Cell() for listener in LISTENERS}
                    for _ in range(args.rounds):
                        node = bed.nodes[turn % len(bed.nodes)]
                        turn += 1
                        one_round(
                            name,
                            node,
                            bed,
                            lb,
                            f"{state_root}/{node.name}",
                            args,
                            results[name],
                        )
        finally:
            for agent in agents:
                agent.stop()
            bed.stop()
    print()
    print(
        f"Failed transactions per fault ({args.rounds} rounds, fault held {args.hold:g} s,"
        f" {1 / args.period:g} transactions/s per check style); 'on node' = sent to the faulty"
        " node, 'elsewhere' = on the other nodes"
    )
    print()
    print(
        "| fault | check | failed, on node (per round) | failed elsewhere"
        " | LB out after (s, median) | sent to the node during the fault"
        " | slowest transaction elsewhere (s, max) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, cells in results.items():
        for listener, cell in cells.items():
            label = LABELS[listener]
            print(
                f"| {name} | {label} | {sum(cell.failed_node)} ({cell.failed_node})"
                f" | {sum(cell.failed_other)} | {median(cell.out_after)}"
                f" | {sum(cell.sent_during)} | {_common.fmt(max(cell.slowest_other))} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

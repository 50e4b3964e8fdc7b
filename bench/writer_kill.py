"""Pooled clients and a writer fault, with and without closing the old writer's sessions.

Why: a load balancer's failed probe stops only new connections; a pool's long-lived ones stay
on the old writer (HAProxy in TCP mode, Azure's LB, kube-proxy). writer_users makes the old
writer kill them writer_kill_grace s after it lost the role (docs/architecture.md, "Closing the
old writer's sessions"). This measures what the clients get.

Set-up: a 3-node test bed, one agent per node with --writer (writer_user with the lease's grants
plus PROCESS, CONNECTION ADMIN), one real HAProxy (testkit.haproxy: TCP mode, inter 1 s, fall 1,
rise 1; established sessions never cut) whose write rule checks GET /writer. Clients
(testkit.workload.Pool): --workers threads with one long-lived connection each, plus --churn
threads whose connection is recycled every 5 transactions; each transaction updates 2 of 3 hot
rows. Per fault on the writer (maintenance, freeze) and per mode (writer_users off / on with
--grace): --warm s of traffic, inject, hold --hold s, restore, wait until the cluster is whole.
Figures from the injection to the end of the hold: failed transactions (by error), the 1213
hot-row conflicts, commits on the old writer, and when the last of them came.

Needs root (a 3-node test bed) and /usr/sbin/haproxy.
Usage: python bench/writer_kill.py [--hold 12] [--grace 2] [--workers 4] [--churn 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter

import _common

from galera_health.lease_sql import GRANTS
from galera_health.testbed import GaleraTestbed
from testkit.agent import ServerProcess
from testkit.haproxy import Backend, HAProxy, Listener, free_port
from testkit.workload import Pool, prepare_hot

CLIENT = ("pool_bench", "pool-bench-pw-3f1")
AGENT_USER = "gh_kill_bench"
KILL_GRANT = "PROCESS, CONNECTION ADMIN ON *.*"
FAULTS = ["maintenance", "freeze"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm", type=float, default=4.0)
    parser.add_argument("--hold", type=float, default=12.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--churn", type=int, default=2)
    parser.add_argument("--faults", default=",".join(FAULTS))
    args = parser.parse_args()
    print(_common.machine_line())
    with GaleraTestbed(3) as bed:
        bed.create_account(AGENT_USER, (*GRANTS, KILL_GRANT))
        prepare_hot(bed.nodes[0].sql, *CLIENT, rows=3)
        for node in bed.nodes:
            while (
                node.sql(f"SELECT COUNT(*) FROM mysql.global_priv WHERE User='{CLIENT[0]}'")[0][0]
                != "1"
                or node.sql("SELECT COUNT(*) FROM pool_hot.hot")[0][0] != "3"
            ):
                time.sleep(0.1)
        state = {n.name: tempfile.mkdtemp(prefix=f"writer-kill-{n.name}-") for n in bed.nodes}
        ports = {n.name: free_port() for n in bed.nodes}
        agents: dict[str, ServerProcess] = {}

        def start_agent(name: str, kill: bool) -> None:
            node = bed.node(name)
            command = [_common.PYTHON, "-m", "galera_health", "serve"]
            command += [
                "--listen",
                f"127.0.0.1:{ports[name]}",
                "--node",
                f"{name}={node.address()}",
            ]
            command += ["--user", bed.monitor_user, "--password-file", bed.password_file]
            command += ["--writer", "--writer-user", AGENT_USER]
            command += ["--writer-password-file", bed.password_file, "--state-dir", state[name]]
            if kill:
                command += ["--writer-users", CLIENT[0], "--writer-kill-grace", f"{args.grace:g}"]
            agents[name] = ServerProcess(command, ports[name], name=f"kill-{name}")
            agents[name].wait_for(lambda a: a.status in (200, 503), "/livez", timeout=20)

        def stop_agents() -> None:
            for agent in agents.values():
                agent.stop()

        def writer(other_than: str | None = None) -> str:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = [n for n, a in agents.items() if _common.get(a.port, "/writer")[0] == 200]
                if len(found) == 1 and found[0] != other_than:
                    return found[0]
                time.sleep(0.1)
            raise RuntimeError("no single writer within 60 s")

        def whole() -> None:
            for node in bed.nodes:
                if node.frozen:
                    node.thaw()
            for node in bed.nodes:
                node.wait_synced(timeout=180)
            deadline = time.monotonic() + 120
            while any(n.status("wsrep_cluster_size") != "3" for n in bed.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("cluster not whole")
                time.sleep(0.25)
            for agent in agents.values():
                agent.wait_for(lambda a: a.status == 200, "/health", timeout=60)

        backends = [Backend(n.name, n.host, n.port, agent_port=ports[n.name]) for n in bed.nodes]
        rows = []
        try:
            with HAProxy([Listener("lb_writer", "writer", free_port(), backends)]) as lb:
                for kill in (False, True):
                    stop_agents()
                    for node in bed.nodes:
                        start_agent(node.name, kill)
                    for fault in [f.strip() for f in args.faults.split(",") if f.strip()]:
                        whole()
                        old = writer()
                        lb.wait_routed(old, True, 60)
                        port = lb.port("lb_writer")
                        pools = [
                            Pool("127.0.0.1", port, *CLIENT, workers=args.workers).start(),
                            Pool("127.0.0.1", port, *CLIENT, workers=args.churn, recycle=5).start(),
                        ]
                        time.sleep(args.warm)
                        injected = time.monotonic()
                        marker = os.path.join(state[old], "maintenance")
                        if fault == "maintenance":
                            open(marker, "w").close()
                        else:
                            bed.node(old).freeze()
                        time.sleep(args.hold)
                        ended = time.monotonic()
                        if fault == "maintenance":
                            os.unlink(marker)
                        else:
                            bed.node(old).thaw()
                        results = [r for pool in pools for r in pool.stop()]
                        window = [r for r in results if injected <= r.ended <= ended]
                        errors = Counter(r.error for r in window if r.error is not None)
                        on_old = [r.ended - injected for r in window if r.ok and r.node == old]
                        rows.append(
                            [
                                fault,
                                f"on, grace {args.grace:g} s" if kill else "off",
                                str(sum(1 for r in window if r.ok)),
                                str(sum(errors.values())),
                                str(errors.get("1213", 0)),
                                ", ".join(f"{k} x{v}" for k, v in errors.most_common()) or "-",
                                str(len(on_old)),
                                f"{max(on_old):.1f}" if on_old else "-",
                            ]
                        )
                        print(f"  {fault} (kill {'on' if kill else 'off'}): done", flush=True)
                whole()
        finally:
            stop_agents()
        print(
            f"\n{args.workers} pooled + {args.churn} recycled (every 5) clients through "
            f"HAProxy's /writer rule, {args.hold:g} s from the fault on the writer:"
        )
        print(
            _common.table(
                [
                    "fault",
                    "writer_users kill",
                    "committed",
                    "failed",
                    "1213",
                    "failures by error",
                    "commits on the old writer",
                    "last of them (s after the fault)",
                ],
                rows,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

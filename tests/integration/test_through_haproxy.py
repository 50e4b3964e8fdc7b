"""What a database client sees through a real HAProxy that checks the agents, fault by fault.

One agent per node (as deployed: each next to its database), at its defaults. One HAProxy in TCP
mode with a listener per check style, side by side: `GET /health` (how the Azure LB asks), bare
`option httpchk` (OPTIONS /, what clustercheck set-ups have), `GET /`, and HAProxy's `agent-check`
next to a plain TCP check of the MySQL port; all with docs/haproxy.md's timing (fastinter 250 ms,
fall 2, rise 2), a check timeout equal to the interval, retries 0, no redispatch and established
sessions never cut. A client workload goes through every listener during the same fault, a new
connection per transaction (a read and an insert, 2 s deadlines), and HAProxy's session log says
which node got each one.

Bounds are generous (this machine is shared); figures per fault are in docs/haproxy.md, measured
by bench/lb_failures.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mysql.connector
import pytest

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import AgentProcess, Answer, run_cli, stop_all
from testkit.haproxy import HAPROXY, Backend, HAProxy, Listener, Transition, free_port
from testkit.workload import (
    Outcome,
    Workload,
    attribute,
    missing_acks,
    prepare,
    summary,
    wait_logged,
)

pytestmark = pytest.mark.galera

STYLES = ("health", "bare", "root", "agent")
INTER = 1.0  # HAProxy's check interval, and its check timeout
SLACK = 2.0  # for a busy machine
CLIENT = ("lb_client", "lb-client-pw-4f1")


@dataclass
class Bed:
    cluster: GaleraTestbed
    agents: dict[str, AgentProcess]
    state_dirs: dict[str, Path]
    lb: HAProxy
    first_counter: int = 0  # HAProxy's session counter when the current workload started

    def workload(self) -> Workload:
        """A new workload; HAProxy's sessions from then on are its own (by HAProxy's session
        counter: its logged accept time is in whole ms and can read a little early)."""
        self.first_counter = self.lb.next_counter()
        targets = {listener.name: ("127.0.0.1", listener.port) for listener in self.lb.listeners}
        return Workload(targets, *CLIENT).start()


@pytest.fixture(scope="module")
def bed(cluster: GaleraTestbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    if not os.access(HAPROXY, os.X_OK):
        message = f"{HAPROXY} is missing: run ./scripts/setup.sh --test (Debian package haproxy)"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    prepare([node.sql for node in cluster.nodes], *CLIENT)
    agents: dict[str, AgentProcess] = {}
    state_dirs: dict[str, Path] = {}
    agent_check_ports: dict[str, int] = {}
    try:
        for node in cluster.nodes:
            state_dirs[node.name] = tmp_path_factory.mktemp(f"state-{node.name}")
            agent_check_ports[node.name] = free_port()
            agents[node.name] = AgentProcess(
                [f"{node.name}={node.address()}"],
                cluster.monitor_user,
                cluster.password_file,
                [
                    "--state-dir",
                    str(state_dirs[node.name]),
                    "--agent-check-listen",
                    f"127.0.0.1:{agent_check_ports[node.name]}",
                    "--drain-seconds",
                    "0",
                ],
            )
        backends = [
            Backend(
                node.name,
                node.host,
                node.port,
                agent_port=agents[node.name].port,
                agent_check_port=agent_check_ports[node.name],
            )
            for node in cluster.nodes
        ]
        listeners = [Listener(f"lb_{style}", style, free_port(), backends) for style in STYLES]
        with HAProxy(listeners, inter=f"{INTER:g}s", check_timeout=f"{INTER:g}s") as lb:
            yield Bed(cluster, agents, state_dirs, lb)
    finally:
        stop_all(agents.values())


def is_503(answer: Answer) -> bool:
    return answer.status == 503


def first(
    transitions: list[Transition],
    server: str,
    after: float,
    match: Callable[[str], bool],
) -> dict[str, Transition]:
    """Per listener, the first change of `server` after `after` (monotonic) whose status matches."""
    found: dict[str, Transition] = {}
    for change in transitions:
        if change.server == server and change.monotonic >= after and match(change.status):
            found.setdefault(change.listener, change)
    return found


def out(status: str) -> bool:
    """No new sessions: DOWN, DRAIN, MAINT, "DOWN 1/2" (coming up). "UP 1/2" (a first failed
    check of fall 2) is still routed."""
    return not status.startswith("UP")


def finish(bed: Bed, load: Workload) -> list[Outcome]:
    """Stop the workload, attribute every transaction to its server, check every acknowledged
    insert is in the cluster (on every node), and print what the client saw."""
    outcomes = load.stop()
    outcomes = attribute(
        outcomes,
        wait_logged(outcomes, bed.lb, bed.first_counter),
    )
    print(summary(outcomes))
    for node in bed.cluster.nodes:
        missing = missing_acks(outcomes, load.run, node.sql)
        assert not missing, f"{node.name} lacks acknowledged inserts: {missing[:5]}"
    return outcomes


def timeline(phases: dict[str, float], outcomes: list[Outcome]) -> str:
    """The test's steps and the failed transactions, in order, in seconds from the first step."""
    start = min(phases.values())
    events = [(t, name) for name, t in phases.items()]
    events += [(o.started, "failed: " + o.describe()) for o in outcomes if not o.ok]
    return "\n".join(f"  {t - start:7.2f} {what}" for t, what in sorted(events))


def routed_after(outcomes: list[Outcome], server: str, wall: dict[str, float]) -> list[Outcome]:
    """Transactions HAProxy sent to `server` after the moment it had it out (per listener)."""
    return [
        o
        for o in outcomes
        if o.server == server and o.accepted is not None and o.accepted > wall[o.target]
    ]


def session_on(bed: Bed, listener: str, server: str) -> mysql.connector.MySQLConnection:
    """A client connection through `listener` that HAProxy gave to `server` (round robin:
    a few tries at most)."""
    for _ in range(12):
        connection = mysql.connector.connect(
            host="127.0.0.1",
            port=bed.lb.port(listener),
            user=CLIENT[0],
            password=CLIENT[1],
            use_pure=True,
            connection_timeout=5,
            read_timeout=5,
        )
        assert isinstance(connection, mysql.connector.MySQLConnection)
        cursor = connection.cursor()
        cursor.execute("SELECT @@wsrep_node_name")
        if cursor.fetchall() == [(server,)]:
            return connection
        connection.close()
    raise AssertionError(f"{listener} never sent a session to {server}")


def test_planned_restart_by_the_runbook_fails_no_transaction(
    synced_cluster: GaleraTestbed, bed: Bed
) -> None:
    """maintenance on, wait until the LB has it out, clean stop, start, healthy, maintenance off.

    Nothing the LB sends to the node fails, and nothing anywhere fails except while the node
    rejoins: Galera pauses commits on EVERY node while the group's membership changes, for about
    1.5-2 s with its default evs.join_retrans_period of 1 s (measured without any LB: see
    docs/haproxy.md). A client with a 2 s deadline can lose the one insert it had in flight then.
    """
    node = synced_cluster.node("n2")
    state = str(bed.state_dirs["n2"])
    agent_nodes = {"GALERA_HEALTH_NODES": f"n2={node.address()}"}  # what n2's agent watches
    bed.lb.wait_all_up(timeout=60)
    established = session_on(bed, "lb_agent", "n2")  # before the workload: not one of its
    load = bed.workload()
    phases: dict[str, float] = {}
    try:
        load.wait_served(10)
        switched = time.monotonic()
        phases["maintenance on"] = time.time()
        on = run_cli(
            "maintenance", "on", "--node", "n2", "--state-dir", state, "--reason", "test",
            env=agent_nodes,
        )  # fmt: skip
        assert on.returncode == 0, on.stderr
        bed.lb.wait_routed("n2", False, timeout=INTER + 1 + SLACK)
        # agent-check: drain. The established session is kept and still works; no new ones.
        assert bed.lb.states()[("lb_agent", "n2")].status == "DRAIN (agent)"
        cursor = established.cursor()
        cursor.execute("SELECT @@wsrep_node_name")
        assert cursor.fetchall() == [("n2",)]
        established.close()
        # established sessions end by themselves (new connection per transaction)
        bed.lb.wait(
            lambda states: all(s.sessions == 0 for (_, name), s in states.items() if name == "n2"),
            timeout=10,
            what="no session left on n2",
        )
        phases["LB has it out, no session left"] = time.time()
        node.stop()
        phases["stopped"] = time.time()
        node.start()
        phases["started (rejoined)"] = time.time()
        check = [
            "check",
            "--node",
            f"n2={node.address()}",
            "--user",
            synced_cluster.monitor_user,
            "--password-file",
            synced_cluster.password_file,
        ]
        deadline = time.monotonic() + 180
        while run_cli(*check).returncode != 0:
            assert time.monotonic() < deadline, "n2 not healthy again after its restart"
            time.sleep(0.5)
        phases["healthy"] = time.time()
        # healthy, still held out by maintenance: no listener takes it back
        time.sleep(2 * INTER)
        assert all(s.status != "UP" for (_, n), s in bed.lb.states().items() if n == "n2")
        released = time.monotonic()
        off = run_cli("maintenance", "off", "--node", "n2", "--state-dir", state, env=agent_nodes)
        assert off.returncode == 0, off.stderr
        phases["maintenance off"] = time.time()
        bed.lb.wait_routed("n2", True, timeout=30)
        phases["LB has it back"] = time.time()
        load.wait_served(10)
    finally:
        established.close()
        run_cli("maintenance", "off", "--node", "n2", "--state-dir", state, env=agent_nodes)
        outcomes = finish(bed, load)
        print(timeline(phases, outcomes))
    failed = [o for o in outcomes if not o.ok]
    on_n2 = [o for o in failed if o.server == "n2"]
    assert not on_n2, "\n".join(o.describe() for o in on_n2)
    rejoin = (phases["stopped"], phases["started (rejoined)"])
    unexplained = [o for o in failed if not overlaps(o, *rejoin)]
    assert not unexplained, "\n".join(o.describe() for o in unexplained)
    assert len(failed) <= len(STYLES), "more than one failure per client in the rejoin pause"
    transitions = bed.lb.transitions()
    went_out = first(transitions, "n2", switched, out)
    assert set(went_out) == {f"lb_{s}" for s in STYLES}
    back = first(transitions, "n2", switched, lambda s: s == "UP")
    assert set(back) == {f"lb_{s}" for s in STYLES}
    assert all(change.monotonic >= released for change in back.values()), back
    # no new session went to n2 while it was out (DRAIN for the agent-check listener)
    sent = [
        o
        for o in routed_after(outcomes, "n2", {k: v.wall for k, v in went_out.items()})
        if o.accepted is not None and o.accepted < back[o.target].wall - 0.2
    ]
    assert not sent, "\n".join(o.describe() for o in sent)
    readmitted = min(change.wall for change in back.values())
    assert any(o.node == "n2" and o.started > readmitted for o in outcomes)
    print(
        "LB out after maintenance on:",
        {k: round(v.monotonic - switched, 2) for k, v in went_out.items()},
        f"failed during the rejoin pause: {len(failed)}",
    )


def overlaps(outcome: Outcome, start: float, end: float) -> bool:
    return outcome.started <= end and outcome.started + outcome.seconds >= start


def test_freeze_and_thaw_no_failure_from_taking_the_node_back_too_early(
    synced_cluster: GaleraTestbed, bed: Bed
) -> None:
    """SIGSTOP longer than evs.suspect_timeout: the thawed node believes it is Synced/Primary
    for a few seconds (the phantom); the LB must not take it back then."""
    node = synced_cluster.node("n3")
    others = [n for n in synced_cluster.nodes if n is not node]
    bed.lb.wait_all_up(timeout=60)
    load = bed.workload()
    try:
        load.wait_served(10)
        frozen = time.monotonic()
        node.freeze()
        bed.lb.wait_routed("n3", False, timeout=2 + 1 + INTER + 1 + SLACK)
        # frozen until the others have evicted it (longer than evs.suspect_timeout)
        deadline = time.monotonic() + 60
        while any(n.status("wsrep_cluster_size") != "2" for n in others):
            assert time.monotonic() < deadline, "n3 was not evicted"
            time.sleep(0.25)
        node.thaw()
        thawed = time.monotonic()
        bed.lb.wait_routed("n3", True, timeout=120)
        # readmitted only once the others count it in again
        sizes = {n.name: n.status("wsrep_cluster_size") for n in others}
        assert set(sizes.values()) == {"3"}, sizes
        load.wait_served(10)
    finally:
        if node.frozen:
            node.thaw()
        outcomes = finish(bed, load)
    transitions = bed.lb.transitions()
    went_out = first(transitions, "n3", frozen, out)
    assert set(went_out) == {f"lb_{s}" for s in STYLES}
    back = first(transitions, "n3", frozen, lambda s: s == "UP")
    assert all(change.monotonic > thawed for change in back.values()), back
    late = [
        o
        for o in routed_after(outcomes, "n3", {k: v.wall for k, v in went_out.items()})
        if not o.ok
    ]
    assert not late, "\n".join(o.describe() for o in late)
    print(
        "LB out after the freeze:",
        {k: round(v.monotonic - frozen, 2) for k, v in went_out.items()},
        "back after the thaw:",
        {k: round(v.monotonic - thawed, 2) for k, v in back.items()},
    )


@dataclass(frozen=True)
class Fault:
    node: str
    inject: Callable[[TestbedNode], object]
    restore: Callable[[TestbedNode], object]
    detection: float  # the agent's bound for noticing it (generous)


def restart(node: TestbedNode) -> None:
    node.start()
    node.wait_synced(timeout=180)


FAULTS = {
    "reject_queries": Fault(
        "n1",
        lambda n: n.sql("SET GLOBAL wsrep_reject_queries = ALL"),
        lambda n: n.sql("SET GLOBAL wsrep_reject_queries = NONE"),
        1 + SLACK,
    ),
    "read_only": Fault(
        "n2",
        lambda n: n.sql("SET GLOBAL read_only = ON"),
        lambda n: n.sql("SET GLOBAL read_only = OFF"),
        1 + SLACK,
    ),
    # non-Primary once the others are suspected: evs.suspect_timeout (3 s on the test bed) + 1 s
    "split": Fault("n3", lambda n: n.isolate(True), lambda n: n.isolate(False), 3 + 1 + 1 + SLACK),
    "kill_9": Fault("n1", TestbedNode.kill, restart, 1 + SLACK),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_takes_the_node_out_within_detection_plus_one_check(
    synced_cluster: GaleraTestbed, bed: Bed, name: str
) -> None:
    fault = FAULTS[name]
    node = synced_cluster.node(fault.node)
    agent = bed.agents[fault.node]
    bed.lb.wait_all_up(timeout=60)
    load = bed.workload()
    injected = False
    try:
        load.wait_served(10)
        started = time.monotonic()
        fault.inject(node)
        injected = True
        agent.wait_for(is_503, timeout=fault.detection + 10, interval=0.02)
        detected = time.monotonic() - started
        bed.lb.wait_routed(fault.node, False, timeout=detected + INTER + SLACK + 5)
        load.wait_served(5)  # the client goes on through the other nodes
        fault.restore(node)
        injected = False
        bed.lb.wait_routed(fault.node, True, timeout=120)
        load.wait_served(5)
    finally:
        if injected:
            fault.restore(node)
        outcomes = finish(bed, load)
    went_out = first(bed.lb.transitions(), fault.node, started, out)
    assert set(went_out) == {f"lb_{s}" for s in STYLES}
    lb_out = {k: v.monotonic - started for k, v in went_out.items()}
    print(
        f"{name}: agent 503 after {detected:.2f} s, LB out after",
        {k: round(v, 2) for k, v in lb_out.items()},
    )
    assert detected <= fault.detection, detected
    assert all(seconds <= detected + INTER + SLACK for seconds in lb_out.values()), lb_out
    late = routed_after(outcomes, fault.node, {k: v.wall for k, v in went_out.items()})
    # only sessions accepted before the LB had it out went there until it was back up
    back = first(bed.lb.transitions(), fault.node, started, lambda s: s == "UP")
    late = [o for o in late if o.accepted is not None and o.accepted < back[o.target].wall - 0.2]
    assert not late, "\n".join(o.describe() for o in late)

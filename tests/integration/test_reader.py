"""/reader through a real HAProxy: a read listener probing /reader beside a write listener probing
/writer, one agent per node with --writer. Reads never reach the writer, and follow it when the
role moves (docs/haproxy.md, "Reads off the writer")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pytest

from galera_health.testbed import GaleraTestbed
from testkit.haproxy import Backend, HAProxy, Listener, ServerState, free_port

from .conftest import restore
from .election import NAMES, Election

pytestmark = pytest.mark.galera

INTER = 1.0
Bed = tuple[Election, HAProxy]


@pytest.fixture(scope="module")
def bed(cluster: GaleraTestbed, writer_account: tuple[str, str]) -> Iterator[Bed]:
    restore(cluster)
    election = Election(cluster, *writer_account)
    election.sampler.start()
    try:
        backends = [
            Backend(name, cluster.node(name).host, cluster.node(name).port,
                    agent_port=election.agents[name].port)
            for name in NAMES
        ]  # fmt: skip
        listeners = [
            Listener("lb_reader", "reader", free_port(), backends),
            Listener("lb_writer", "writer", free_port(), backends),
        ]
        with HAProxy(listeners, inter=f"{INTER:g}s", check_timeout=f"{INTER:g}s") as lb:
            yield election, lb
    finally:
        election.stop()
        restore(cluster)


def up_in(states: dict[tuple[str, str], ServerState], listener: str) -> set[str]:
    """The servers `listener` sends new sessions to: "UP", and "UP 1/2" (a first failed check
    with fall 2, still routed); not "DOWN 1/2" (coming up, not yet routed)."""
    return {
        s.server for s in states.values() if s.listener == listener and s.status.startswith("UP")
    }


def served(lb: HAProxy, cluster: GaleraTestbed, sessions: int = 8) -> set[str]:
    """The nodes that new sessions through the read listener reached."""
    password = Path(cluster.password_file).read_text().strip()
    reached: set[str] = set()
    for _ in range(sessions):
        connection = mysql.connector.connect(
            host="127.0.0.1", port=lb.port("lb_reader"), user=cluster.monitor_user,
            password=password, use_pure=True, connection_timeout=5, read_timeout=5,
        )  # fmt: skip
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT @@wsrep_node_name")
            reached.add(str(cursor.fetchall()[0][0]))
        finally:
            connection.close()
    return reached


def reads_reach(lb: HAProxy, cluster: GaleraTestbed, expected: set[str]) -> None:
    """Reads never reach a node outside `expected` (the writer), and reach all of it once
    HAProxy's checks agree (a check that times out on a loaded machine takes a reader out for
    a second: only fewer nodes, never the writer)."""
    deadline = time.monotonic() + 20
    while True:
        reached = served(lb, cluster)
        assert reached <= expected, f"reads reached {sorted(reached - expected)}"
        if reached == expected:
            return
        assert time.monotonic() < deadline, f"reads reached {sorted(reached)}, not {expected}"
        time.sleep(0.5)


def test_reads_go_to_every_node_but_the_writer_and_follow_it(bed: Bed) -> None:
    election, lb = bed
    cluster = election.cluster
    writer = election.sampler.current_writer(timeout=40)
    others = {n for n in NAMES if n != writer}
    lb.wait(
        lambda s: up_in(s, "lb_reader") == others and up_in(s, "lb_writer") == {writer},
        timeout=30,
        what=f"readers {sorted(others)}, writer {writer}",
    )
    reads_reach(lb, cluster, others)
    # the writer in maintenance: the role moves, the new writer leaves the readers, the old one
    # is out of both (its /health is 503), the third node takes every read
    marker = election.state_dir(writer) / "maintenance"
    marker.write_text("")
    try:
        new = election.sampler.wait(
            lambda s: len(s.writers) == 1 and s.writers[0] != writer, time.monotonic(), 30
        ).writers[0]
        third = (others - {new}).pop()
        lb.wait(
            lambda s: up_in(s, "lb_reader") == {third} and up_in(s, "lb_writer") == {new},
            timeout=10,
            what=f"reader {third} only, writer {new}",
        )
        reads_reach(lb, cluster, {third})
    finally:
        marker.unlink()
    election.wait_healthy(writer)
    lb.wait(
        lambda s: up_in(s, "lb_reader") == {writer, third},
        timeout=15,
        what=f"readers {writer} and {third} (the role stays on {new})",
    )
    reads_reach(lb, cluster, {writer, third})

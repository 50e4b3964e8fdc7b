"""The agent-check listener of the real agent, polling the real Galera test bed: the line it
answers per state, and a real HAProxy (the Debian package) whose `agent-check` reads it and
whose stats socket shows the server DRAIN in maintenance, DOWN on a fault, UP again after."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.agent import AgentProcess, run_cli
from testkit.haproxy import HAPROXY, Backend, HAProxy, Listener, ServerState, free_port

pytestmark = pytest.mark.galera

TIMING = ["--interval", "0.5", "--connect-timeout", "2", "--read-timeout", "2"]


def agent_line(port: int, send: bytes = b"") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if send:
            sock.sendall(send)
        sock.settimeout(5)
        data = b""
        while piece := sock.recv(4096):
            data += piece
    return data.decode("ascii")


def wait_line(port: int, predicate: Callable[[str], bool], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = agent_line(port)
        if predicate(line):
            return line
        time.sleep(0.1)
    raise AssertionError(f"agent-check never matched within {timeout} s; last line {line!r}")


def agent_with_check(
    node: TestbedNode, cluster: GaleraTestbed, state_dir: Path
) -> tuple[AgentProcess, int]:
    port = free_port()
    agent = AgentProcess(
        [f"{node.name}={node.address()}"],
        cluster.monitor_user,
        cluster.password_file,
        [*TIMING, "--state-dir", str(state_dir), "--agent-check-listen", f"127.0.0.1:{port}"],
    )
    return agent, port


def maintenance(state_dir: Path, node: TestbedNode, action: str) -> None:
    """As an operator would: the node named, checked against the agent's own node list."""
    result = run_cli(
        "maintenance", action, "--node", node.name, "--state-dir", str(state_dir),
        env={"GALERA_HEALTH_NODES": f"{node.name}={node.address()}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_agent_check_line_follows_the_node(synced_cluster: GaleraTestbed, tmp_path: Path) -> None:
    node = synced_cluster.node("n1")
    agent, port = agent_with_check(node, synced_cluster, tmp_path)
    with agent:
        assert agent.status()["agent"]["agent_check_listen"] == f"127.0.0.1:{port}"
        assert wait_line(port, lambda line: line == "up ready\n") == "up ready\n"
        assert agent_line(port, b"n1\n") == "up ready\n"  # HAProxy's agent-send: ignored
        maintenance(tmp_path, node, "on")
        line = wait_line(port, lambda line: line.startswith("drain"))
        assert line.startswith("drain #n1: maintenance (") and line.endswith(")\n"), line
        assert agent.get("/health").status == 503
        maintenance(tmp_path, node, "off")
        wait_line(port, lambda line: line == "up ready\n")
        node.sql("SET GLOBAL read_only = ON")
        try:
            line = wait_line(port, lambda line: line.startswith("down"))
            assert line.startswith("down #n1: "), line
            # read_only desyncs the node for a moment: the final reason is read_only
            wait_line(port, lambda line: line.startswith("down #n1: read_only"))
        finally:
            node.sql("SET GLOBAL read_only = OFF")
        wait_line(port, lambda line: line == "up ready\n")
    output = agent.output()
    assert "Traceback" not in output, output[-3000:]


# ----------------------------------------------------------------------- a real HAProxy


def wait_state(lb: HAProxy, server: str, status: str, timeout: float = 30) -> ServerState:
    """The server's state once its status starts with `status` ("DRAIN" matches "DRAIN (agent)")."""
    seen: list[ServerState] = []

    def matches(states: dict[tuple[str, str], ServerState]) -> bool:
        seen.append(states[("galera", server)])
        return seen[-1].status.split(" ")[0] == status

    lb.wait(matches, timeout, f"{server} {status}")
    return seen[-1]


@pytest.fixture
def haproxy_and_agent(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> Iterator[tuple[HAProxy, AgentProcess, Path]]:
    """HAProxy (testkit.haproxy) in TCP mode in front of n1: a plain L4 check of the MySQL port
    plus the agent's agent-check, with `agent-send`, every 500 ms."""
    if not os.access(HAPROXY, os.X_OK):
        message = f"{HAPROXY} is missing: run ./scripts/setup.sh --test"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    node = synced_cluster.node("n1")
    agent, port = agent_with_check(node, synced_cluster, tmp_path)
    try:
        wait_line(port, lambda line: line == "up ready\n")
        backend = Backend(node.name, node.host, node.port, agent_check_port=port)
        listener = Listener("galera", "agent-send", free_port(), [backend])
        with HAProxy([listener], inter="500ms", check_timeout="500ms") as lb:
            yield lb, agent, tmp_path
    finally:
        agent.stop()


def test_haproxy_agent_check_drains_on_maintenance_and_downs_on_a_fault(
    synced_cluster: GaleraTestbed, haproxy_and_agent: tuple[HAProxy, AgentProcess, Path]
) -> None:
    lb, agent, state_dir = haproxy_and_agent
    node = synced_cluster.node("n1")
    state = wait_state(lb, "n1", "UP")
    print(f"\nhaproxy n1: {shown(state)}")

    # A client session opened before the drain: HAProxy must keep it (DRAIN, not DOWN).
    client = socket.create_connection(("127.0.0.1", lb.port("galera")), timeout=5)
    try:
        client.settimeout(5)
        greeting = client.recv(4096)
        assert greeting, "no MySQL greeting through haproxy"
        maintenance(state_dir, node, "on")
        state = wait_state(lb, "n1", "DRAIN")
        print(f"maintenance on: {shown(state)}")
        assert state.status == "DRAIN (agent)", state
        # the established session is still there (MariaDB itself would close this one,
        # which never authenticates, after its connect_timeout of 10 s)
        assert state.sessions == 1, state
        # open with nothing to read (a close would read b""): haproxy kept the session
        with pytest.raises((BlockingIOError, TimeoutError)):
            client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        client.close()
    maintenance(state_dir, node, "off")
    wait_state(lb, "n1", "UP")

    node.sql("SET GLOBAL wsrep_reject_queries = ALL")
    try:
        state = wait_state(lb, "n1", "DOWN")
        print(f"reject_queries=ALL: {shown(state)}")
        assert state.status == "DOWN (agent)", state
    finally:
        node.sql("SET GLOBAL wsrep_reject_queries = NONE")
    state = wait_state(lb, "n1", "UP")
    print(f"restored: {shown(state)}")
    assert lb.process is not None and lb.process.poll() is None, lb.output()
    assert "Traceback" not in agent.output()


def shown(state: ServerState) -> str:
    return f"{state.status}, agent {state.agent!r}"

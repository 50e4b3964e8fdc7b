"""The agent-check listener of the real agent, polling the real Galera test bed: the line it
answers per state, and a real HAProxy (the Debian package) whose `agent-check` reads it and
whose stats socket shows the server DRAIN in maintenance, DOWN on a fault, UP again after."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from galera_health.testbed import GaleraTestbed, TestbedNode, free_ports
from testkit.agent import AgentProcess, run_cli

pytestmark = pytest.mark.galera

HAPROXY = "/usr/sbin/haproxy"
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
    port = free_ports(1)[0]
    agent = AgentProcess(
        [f"{node.name}={node.address()}"],
        cluster.monitor_user,
        cluster.password_file,
        [*TIMING, "--state-dir", str(state_dir), "--agent-check-listen", f"127.0.0.1:{port}"],
    )
    return agent, port


def maintenance(state_dir: Path, node: str, action: str) -> None:
    result = run_cli("maintenance", action, "--node", node, "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr


def test_agent_check_line_follows_the_node(synced_cluster: GaleraTestbed, tmp_path: Path) -> None:
    node = synced_cluster.node("n1")
    agent, port = agent_with_check(node, synced_cluster, tmp_path)
    with agent:
        assert agent.status()["agent"]["agent_check_listen"] == f"127.0.0.1:{port}"
        assert wait_line(port, lambda line: line == "up ready\n") == "up ready\n"
        assert agent_line(port, b"n1\n") == "up ready\n"  # HAProxy's agent-send: ignored
        maintenance(tmp_path, "n1", "on")
        line = wait_line(port, lambda line: line.startswith("drain"))
        assert line.startswith("drain #n1: maintenance (") and line.endswith(")\n"), line
        assert agent.get("/health").status == 503
        maintenance(tmp_path, "n1", "off")
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


class HAProxy:
    """The Debian haproxy in the foreground: TCP mode in front of one node, a regular L4 check
    of the MySQL port plus the agent's agent-check, and an admin socket to read its view."""

    def __init__(self, node: TestbedNode, agent_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="galera-health-haproxy-"))
        self.socket = self.dir / "admin.sock"
        self.front = free_ports(1)[0]
        host, port = node.address().rsplit(":", 1)
        checks = (
            "check inter 500ms fall 1 rise 1 agent-check agent-addr 127.0.0.1 "
            f'agent-port {agent_port} agent-inter 500ms agent-send "{node.name}\\n"'
        )
        config = self.dir / "haproxy.cfg"
        config.write_text(
            f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 500ms
listen galera
    bind 127.0.0.1:{self.front}
    server {node.name} {host}:{port} {checks}
"""
        )
        check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = open(self.dir / "haproxy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, "haproxy did not open its admin socket"
            time.sleep(0.05)

    def command(self, text: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(text.encode() + b"\n")
            data = b""
            while piece := sock.recv(65536):
                data += piece
        return data.decode()

    def server(self, name: str) -> dict[str, str]:
        """The server's row of `show stat` (status: UP, DOWN, DRAIN (agent), ...)."""
        text = self.command("show stat").lstrip("# ")
        for row in csv.DictReader(text.splitlines()):
            if row["pxname"] == "galera" and row["svname"] == name:
                return row
        raise AssertionError(f"no server {name} in show stat:\n{text}")

    def wait_status(self, name: str, wanted: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        row: dict[str, str] = {}
        while time.monotonic() < deadline:
            row = self.server(name)
            if row["status"].split(" ")[0] == wanted:  # "DRAIN (agent)", "DOWN (agent)"
                return row
            time.sleep(0.1)
        raise AssertionError(f"haproxy never showed {name} {wanted} in {timeout} s; last {row}")

    def output(self) -> str:
        return (self.dir / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def haproxy_binary() -> str:
    if not os.access(HAPROXY, os.X_OK):
        message = f"{HAPROXY} is missing: run ./scripts/setup.sh --test"
        if os.environ.get("CI") or os.environ.get("GALERA_TESTS_REQUIRE_GALERA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return HAPROXY


@pytest.fixture
def haproxy_and_agent(
    synced_cluster: GaleraTestbed, tmp_path: Path, haproxy_binary: str
) -> Iterator[tuple[HAProxy, AgentProcess, Path]]:
    node = synced_cluster.node("n1")
    agent, port = agent_with_check(node, synced_cluster, tmp_path)
    try:
        wait_line(port, lambda line: line == "up ready\n")
        haproxy = HAProxy(node, port)
        try:
            yield haproxy, agent, tmp_path
        finally:
            haproxy.stop()
    finally:
        agent.stop()


def test_haproxy_agent_check_drains_on_maintenance_and_downs_on_a_fault(
    synced_cluster: GaleraTestbed, haproxy_and_agent: tuple[HAProxy, AgentProcess, Path]
) -> None:
    haproxy, agent, state_dir = haproxy_and_agent
    node = synced_cluster.node("n1")
    row = haproxy.wait_status("n1", "UP")
    print(f"\nhaproxy n1: {shown(row)}")

    # A client session opened before the drain: HAProxy must keep it (DRAIN, not DOWN).
    client = socket.create_connection(("127.0.0.1", haproxy.front), timeout=5)
    try:
        client.settimeout(5)
        greeting = client.recv(4096)
        assert greeting, "no MySQL greeting through haproxy"
        maintenance(state_dir, "n1", "on")
        row = haproxy.wait_status("n1", "DRAIN")
        print(f"maintenance on: {shown(row)}")
        assert row["status"] == "DRAIN (agent)", row
        # the established session is still there (MariaDB itself would close this one,
        # which never authenticates, after its connect_timeout of 10 s)
        assert int(row["scur"]) == 1, row
        # open with nothing to read (a close would read b""): haproxy kept the session
        with pytest.raises((BlockingIOError, TimeoutError)):
            client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        client.close()
    maintenance(state_dir, "n1", "off")
    haproxy.wait_status("n1", "UP")

    node.sql("SET GLOBAL wsrep_reject_queries = ALL")
    try:
        row = haproxy.wait_status("n1", "DOWN")
        print(f"reject_queries=ALL: {shown(row)}")
        assert row["status"] == "DOWN (agent)", row
    finally:
        node.sql("SET GLOBAL wsrep_reject_queries = NONE")
    row = haproxy.wait_status("n1", "UP")
    print(f"restored: {shown(row)}")
    assert haproxy.process.poll() is None, haproxy.output()
    assert "Traceback" not in agent.output()


def shown(row: dict[str, str]) -> str:
    return f"{row['status']}, agent {row.get('agent_status')} {row.get('agent_desc')!r}"

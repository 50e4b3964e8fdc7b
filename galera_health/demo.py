"""`galera-health demo`: a local Galera cluster with one agent per node, to watch verdicts change.

Built on the same test bed the integration tests use. Everything it starts it stops on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from .testbed import GaleraTestbed, TestbedError, TestbedNode, free_ports, missing_requirements

RESTART_AFTER = 15.0


def agent_ports(first: int, count: int) -> list[int]:
    """`first`, `first+1`, ... when free; otherwise free ports chosen by the kernel."""
    import socket

    wanted = list(range(first, first + count))
    for port in wanted:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return free_ports(count)
    return wanted


def start_agent(node: TestbedNode, testbed: GaleraTestbed, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "galera_health",
            "serve",
            "--node",
            f"{node.name}={node.address()}",
            "--listen",
            f"127.0.0.1:{port}",
            "--user",
            testbed.monitor_user,
            "--password-file",
            testbed.password_file,
        ],
        start_new_session=True,  # Ctrl-C reaches us; we stop the agents in order
    )


def sql_command(node: TestbedNode, statement: str) -> str:
    return f'mariadb --no-defaults --socket={node.socket} -uroot -e "{statement}"'


def print_guide(testbed: GaleraTestbed, ports: list[int], all_port: int) -> None:
    print("\nA 3-node MariaDB Galera cluster is running, with an agent in front of each node.\n")
    for node, port in zip(testbed.nodes, ports, strict=True):
        print(f"  {node.name}: mariadbd pid {node.pid}, MySQL {node.address()}")
        print(f"      http://127.0.0.1:{port}/health   /readyz   /livez   /status   /metrics")
    print(f"  all nodes: http://127.0.0.1:{all_port}/health  (200 only when every node is usable)")
    print(f"             http://127.0.0.1:{all_port}/status")
    print(f"  status page (open in a browser): http://127.0.0.1:{all_port}/")
    node = testbed.nodes[-1]
    port = ports[-1]
    print(
        f"\nWatch one node:  watch -n0.5 curl -s -w '%{{http_code}}\\\\n' 127.0.0.1:{port}/health"
    )
    print(f"\nBreak {node.name} and watch its verdict change (transitions are logged here):")
    print(f"  freeze:   kill -STOP {node.pid}      thaw:  kill -CONT {node.pid}")
    isolate = "SET GLOBAL wsrep_provider_options='gmcast.isolate={}'"
    print(f"  split:    {sql_command(node, isolate.format(1))}")
    print(f"  rejoin:   {sql_command(node, isolate.format(0))}")
    print(f"  desync:   {sql_command(node, 'SET GLOBAL wsrep_desync=ON')}   (OFF to undo)")
    print(f"  read-only:{sql_command(node, 'SET GLOBAL read_only=ON')}   (OFF to undo)")
    print(
        f"  stop:     kill {node.pid}   (the demo restarts a stopped node after "
        f"{RESTART_AFTER:.0f} s so you can watch it rejoin)"
    )
    print("\nCtrl-C stops the agents and the cluster and removes its files.\n", flush=True)


def run_demo(size: int = 3, first_port: int = 9200) -> int:
    problem = missing_requirements()
    if problem is not None:
        print(
            f"galera-health demo: {problem}; run ./scripts/demo (it installs them)", file=sys.stderr
        )
        return 2

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    testbed = GaleraTestbed(size=size)
    agents: list[subprocess.Popen[bytes]] = []
    try:
        print(f"Starting a {size}-node Galera cluster under {testbed.base_dir} ...", flush=True)
        started = time.monotonic()
        testbed.start()
        print(f"Cluster Synced after {time.monotonic() - started:.0f} s.", flush=True)
        ports = agent_ports(first_port, size + 1)
        for node, port in zip(testbed.nodes, ports, strict=False):
            agents.append(start_agent(node, testbed, port))
        agents.append(all_nodes_agent(testbed, ports[-1]))
        time.sleep(1.5)
        print_guide(testbed, ports[:-1], ports[-1])
        down_since: dict[str, float] = {}
        while True:
            time.sleep(1)
            for node in testbed.nodes:
                if node.is_running():
                    down_since.pop(node.name, None)
                    continue
                since = down_since.setdefault(node.name, time.monotonic())
                if time.monotonic() - since >= RESTART_AFTER:
                    print(f"demo: restarting {node.name} ...", flush=True)
                    try:
                        node.start()
                        print(f"demo: {node.name} is up again (pid {node.pid})", flush=True)
                    except TestbedError as exc:
                        print(f"demo: could not restart {node.name}: {exc}", flush=True)
                    down_since.pop(node.name, None)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except TestbedError as exc:
        print(f"galera-health demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGINT)  # at once: SIGTERM would drain for 11 s
        for agent in agents:
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
        testbed.stop()


def all_nodes_agent(testbed: GaleraTestbed, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "galera_health", "serve", "--listen", f"127.0.0.1:{port}"]
    for node in testbed.nodes:
        command += ["--node", f"{node.name}={node.address()}"]
    command += ["--user", testbed.monitor_user, "--password-file", testbed.password_file]
    command += ["--log-level", "error"]  # the per-node agents already log each transition
    return subprocess.Popen(command, start_new_session=True)

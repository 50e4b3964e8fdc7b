"""Timing, agents and certificates shared by the integration tests (test modules never import
each other)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from galera_health.testbed import GaleraTestbed, TestbedError, TestbedNode
from testkit.agent import AgentProcess, Answer

INTERVAL = 1.0
CONNECT_TIMEOUT = 2
READ_TIMEOUT = 2
SLACK = 2.0
TIMING = [
    "--interval",
    str(INTERVAL),
    "--connect-timeout",
    str(CONNECT_TIMEOUT),
    "--read-timeout",
    str(READ_TIMEOUT),
]


def agent_for(cluster: GaleraTestbed, *names: str, extra: list[str] | None = None) -> AgentProcess:
    nodes = [f"{n}={cluster.node(n).address()}" for n in names]
    return AgentProcess(nodes, cluster.monitor_user, cluster.password_file, TIMING + (extra or []))


def agent_at(cluster: GaleraTestbed, node: str, extra: list[str] | None = None) -> AgentProcess:
    """An agent with the cluster's monitor account for one node spec (e.g. a fault server)."""
    return AgentProcess([node], cluster.monitor_user, cluster.password_file, TIMING + (extra or []))


def is_200(answer: Answer) -> bool:
    return answer.status == 200


def is_503(answer: Answer) -> bool:
    return answer.status == 503


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=galera-health test {name}", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return key, cert


def make_cert(folder: Path, name: str, ca: tuple[Path, Path], san: str | None) -> tuple[Path, Path]:
    key, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(request),
    )  # fmt: skip
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(extensions),
    )  # fmt: skip
    return key, cert


class ConnectionAttempts:
    """Counts the connection attempts a node has seen since creation (GLOBAL STATUS
    `Connections` counts refused and failed logins too), minus this counter's own reads."""

    def __init__(self, node: TestbedNode) -> None:
        self.node = node
        self.reads = 0
        self.before = self._read()

    def _read(self) -> int:
        """One read over a new root connection. With max_connections filled, root has the one
        extra slot, which a refused attempt of the agent's can hold for a moment (1040 for this
        read too): try again; a refused read is an attempt the node counts, so it is counted."""
        deadline = time.monotonic() + 10
        while True:
            self.reads += 1
            try:
                return int(self.node.status("Connections") or 0)
            except TestbedError as exc:
                if "1040" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def count(self) -> int:
        return self._read() - self.before - (self.reads - 1)

    def wait_for(self, attempts: int, timeout: float = 60.0) -> float:
        """Seconds until at least `attempts` were made; fails after `timeout`."""
        started = time.monotonic()
        while (seen := self.count()) < attempts:
            assert time.monotonic() - started < timeout, f"{seen} of {attempts} attempts"
            time.sleep(0.1)
        return time.monotonic() - started

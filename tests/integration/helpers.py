"""Timing, agents and certificates shared by the integration tests (test modules never import
each other)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from galera_health.testbed import GaleraTestbed
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

"""TLS to MySQL (CA, client certificate, identity, a stalled handshake) and MariaDB's extra_port,
against a real one-node Galera server configured with certificates made here by openssl."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pytest

from galera_health.testbed import free_ports, missing_requirements
from testkit.agent import AgentProcess
from testkit.fault_servers import StallingProxy

from .conftest import started_testbed
from .helpers import CONNECT_TIMEOUT, INTERVAL, SLACK, TIMING, is_200, make_ca, make_cert

pytestmark = pytest.mark.galera


class TlsBed:
    def __init__(self, folder: Path) -> None:
        folder.chmod(0o755)
        self.folder = folder
        self.ca = make_ca(folder, "ca")
        self.other_ca = make_ca(folder, "other-ca")
        self.server = make_cert(folder, "server", self.ca, "IP:127.0.0.1")
        self.client = make_cert(folder, "client", self.ca, None)
        for path in folder.iterdir():
            path.chmod(0o644)  # mariadbd runs as mysql; a test CA only
        self.extra_port = free_ports(1)[0]
        self.extra_config = "\n".join(
            [
                f"ssl_ca={self.ca[1]}",
                f"ssl_cert={self.server[1]}",
                f"ssl_key={self.server[0]}",
                f"extra_port={self.extra_port}",
                "extra_max_connections=5",
            ]
        )

    def start(self) -> None:
        self.bed = started_testbed(size=1, extra_config=self.extra_config)
        self.node = self.bed.nodes[0]

    def agent(self, *extra: str, node: str | None = None, user: str | None = None) -> AgentProcess:
        return AgentProcess(
            [node or f"tls={self.node.address()}"],
            user or self.bed.monitor_user,
            self.bed.password_file,
            [*TIMING, *extra],
        )


@pytest.fixture(scope="module")
def tls() -> Iterator[TlsBed]:
    problem = missing_requirements()
    if problem is not None:
        pytest.fail(problem) if os.environ.get("CI") else pytest.skip(problem)
    # not under pytest's tmp dir: mariadbd runs as mysql and must reach the certificates
    folder = Path(tempfile.mkdtemp(prefix="galera-health-tls-"))
    bed = TlsBed(folder)
    try:
        bed.start()
        user = bed.bed.monitor_user
        bed.node.sql(
            f"ALTER USER '{user}'@'127.0.0.1' REQUIRE SSL; "
            f"CREATE USER 'x509_monitor'@'127.0.0.1' IDENTIFIED BY "
            f"'{bed.bed.monitor_password}' REQUIRE X509"
        )
        yield bed
    finally:
        if hasattr(bed, "bed"):
            bed.bed.stop()
        shutil.rmtree(folder, ignore_errors=True)


def accepts(tls: TlsBed) -> int:
    return int(tls.node.status("Ssl_accepts") or 0)


def test_verified_tls_with_identity(tls: TlsBed) -> None:
    before = accepts(tls)
    with tls.agent("--ssl-ca", str(tls.ca[1]), "--ssl-verify-identity") as agent:
        _, answer = agent.wait_for(is_200, timeout=15)
        assert answer.body == "tls: synced\n"
        assert agent.status()["agent"]["tls"]["verify_identity"] is True
    assert accepts(tls) > before  # the session really was TLS (and the user REQUIRE SSL)


def test_wrong_ca_is_a_tls_error_of_the_agent(tls: TlsBed) -> None:
    with tls.agent("--ssl-ca", str(tls.other_ca[1])) as agent:
        _, answer = agent.wait_for(lambda a: "tls_error" in a.body, timeout=10)
        assert answer.status == 503 and "ssl_ca" in answer.body
        assert agent.status()["nodes"]["tls"]["fault"] == "agent"


def test_identity_check_refuses_a_name_the_certificate_lacks(tls: TlsBed) -> None:
    # "localhost" resolves to the same server, but the certificate names only 127.0.0.1
    node = f"tls=localhost:{tls.node.port}"
    with tls.agent("--ssl-ca", str(tls.ca[1]), "--ssl-verify-identity", node=node) as agent:
        agent.wait_for(lambda a: "tls_error" in a.body, timeout=10)
    with tls.agent("--ssl-ca", str(tls.ca[1]), node=node) as agent:
        agent.wait_for(is_200, timeout=15)  # identity off: the CA check alone passes


def test_client_certificate(tls: TlsBed) -> None:
    key, cert = tls.client
    with tls.agent(
        "--ssl-ca", str(tls.ca[1]), "--ssl-cert", str(cert), "--ssl-key", str(key),
        user="x509_monitor",
    ) as agent:  # fmt: skip
        agent.wait_for(is_200, timeout=15)
    with tls.agent("--ssl-ca", str(tls.ca[1]), user="x509_monitor") as agent:
        _, _answer = agent.wait_for(lambda a: "access_denied" in a.body, timeout=10)


def test_stalled_tls_handshake_is_bounded(tls: TlsBed) -> None:
    with StallingProxy(tls.node.host, tls.node.port, stall_after_greeting=True) as proxy:
        started = time.monotonic()
        with tls.agent("--ssl-ca", str(tls.ca[1]), node=f"tls=127.0.0.1:{proxy.port}") as agent:
            _, answer = agent.wait_for(
                lambda a: "timeout" in a.body, timeout=CONNECT_TIMEOUT + INTERVAL + SLACK + 2
            )
            assert "while connecting" in answer.body
        assert proxy.greetings_forwarded >= 1
        assert time.monotonic() - started < 20


def test_extra_port_keeps_working_when_max_connections_is_exhausted(tls: TlsBed) -> None:
    node = tls.node
    node.sql("SET GLOBAL max_connections = 10")
    fillers = []
    try:
        while len(fillers) < 50:
            try:
                fillers.append(
                    mysql.connector.connect(
                        host=node.host,
                        port=node.port,
                        user=tls.bed.monitor_user,
                        password=tls.bed.monitor_password,
                        use_pure=True,
                        connection_timeout=3,
                    )
                )
            except mysql.connector.Error as exc:
                assert exc.errno == 1040, exc
                break
        with (
            tls.agent() as main_port,
            tls.agent(node=f"tls=127.0.0.1:{tls.extra_port}") as extra_port,
        ):
            main_port.wait_for(lambda a: "too_many_connections" in a.body, timeout=10)
            extra_port.wait_for(is_200, timeout=15)
    finally:
        for filler in fillers:
            filler.close()
        node.sql("SET GLOBAL max_connections = 100")

"""Secrets never leak; /status, /metrics and / can live on their own listener behind a token;
probes stay open. Against the real agent and the real cluster."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest

from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import AgentProcess

from .helpers import TIMING, is_200, make_ca, make_cert

pytestmark = pytest.mark.galera

SECRET = "pw-9f2b-do-not-leak"


def places_a_secret_could_leak(agent: AgentProcess) -> dict[str, str]:
    with open(f"/proc/{agent.pid}/cmdline", "rb") as handle:
        cmdline = handle.read().decode(errors="replace")
    with open(f"/proc/{agent.pid}/comm", encoding="utf-8") as handle:
        title = handle.read()
    return {
        "/status": agent.get("/status").body,
        "/metrics": agent.get("/metrics").body,
        "/health": agent.get("/health").body,
        "cmdline": cmdline,
        "title": title,
        "log": agent.output(),
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_password_never_appears_anywhere(
    synced_cluster: GaleraTestbed, tmp_path: Path, log_format: str
) -> None:
    node = synced_cluster.node("n1")
    wrong = tmp_path / "password"
    wrong.write_text(SECRET)
    wrong.chmod(0o600)
    with AgentProcess(
        [f"n1={node.address()}"],
        synced_cluster.monitor_user,
        str(wrong),
        [*TIMING, "--log-level", "debug", "--log-format", log_format],
    ) as agent:
        agent.wait_for(lambda a: "access_denied" in a.body, timeout=10)
        places = places_a_secret_could_leak(agent)
    for place, text in places.items():
        assert SECRET not in text, place
    assert "access_denied" in places["log"]  # the error itself is there, only the secret is not


def test_password_from_the_environment_does_not_leak(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n1")
    with AgentProcess(
        [f"n1={node.address()}"],
        synced_cluster.monitor_user,
        None,
        [*TIMING, "--log-level", "debug"],
        env={"GALERA_HEALTH_PASSWORD": synced_cluster.monitor_password},
    ) as agent:
        agent.wait_for(is_200, timeout=15)
        places = places_a_secret_could_leak(agent)
        assert agent.status()["agent"]["password_source"] == "environment GALERA_HEALTH_PASSWORD"
    for place, text in places.items():
        assert synced_cluster.monitor_password not in text, place


def test_world_readable_password_file_is_warned_about(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    node = synced_cluster.node("n1")
    readable = tmp_path / "password"
    readable.write_text(synced_cluster.monitor_password)
    readable.chmod(0o644)
    with AgentProcess(
        [f"n1={node.address()}"], synced_cluster.monitor_user, str(readable), TIMING
    ) as agent:
        agent.wait_for(is_200, timeout=15)
        log = agent.output()
    assert f"password_file {readable} is readable by every user (mode 644); chmod 600 it" in log


def test_monitor_account_is_usage_only(synced_cluster: GaleraTestbed) -> None:
    grants = synced_cluster.node("n1").sql(
        f"SHOW GRANTS FOR '{synced_cluster.monitor_user}'@'127.0.0.1'"
    )
    assert len(grants) == 1 and grants[0][0].startswith("GRANT USAGE ON *.* TO"), grants


def request(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_status_on_its_own_listener_behind_a_token(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    status_port = free_ports(1)[0]
    node = synced_cluster.node("n1")
    with AgentProcess(
        [f"n1={node.address()}"],
        synced_cluster.monitor_user,
        synced_cluster.password_file,
        [
            *TIMING,
            "--status-listen",
            f"127.0.0.1:{status_port}",
            "--status-token-file",
            str(token_file),
        ],
    ) as agent:
        agent.wait_for(is_200, timeout=15)
        # the LB's listener: probes only, no layout
        for path in ("/health", "/health/n1", "/readyz", "/livez", "/"):
            assert agent.get(path).status == 200, path
        for path in ("/status", "/metrics"):
            assert agent.get(path).status == 404, path
        # `/` is the probe here as well (the LB's default path), as text even for a browser
        assert agent.get("/").body == agent.get("/health").body == "n1: synced\n"
        # the status listener: the token is required, compared exactly
        assert request(status_port, "/status")[0] == 401
        assert request(status_port, "/status", "wrong")[0] == 401
        assert request(status_port, "/status", "s3cret-toke")[0] == 401
        assert request(status_port, "/status", "s3cret-token-and-more")[0] == 401
        status, body = request(status_port, "/status", "s3cret-token")
        assert status == 200 and '"n1"' in body
        assert request(status_port, "/metrics", "s3cret-token")[0] == 200
        assert request(status_port, "/health")[0] == 200  # probes never need the token
        assert request(status_port, "/") == (200, "n1: synced\n")  # `/` is a probe
        assert "s3cret-token" not in agent.output()


def test_status_listener_over_https(synced_cluster: GaleraTestbed, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    key, cert = make_cert(tmp_path, "status", ca, "IP:127.0.0.1")
    token_file = tmp_path / "token"
    token_file.write_text("tls-token")
    token_file.chmod(0o600)
    status_port = free_ports(1)[0]
    node = synced_cluster.node("n1")
    with AgentProcess(
        [f"n1={node.address()}"],
        synced_cluster.monitor_user,
        synced_cluster.password_file,
        [
            *TIMING,
            "--status-listen", f"127.0.0.1:{status_port}",
            "--status-token-file", str(token_file),
            "--status-tls-cert", str(cert),
            "--status-tls-key", str(key),
        ],
    ) as agent:  # fmt: skip
        agent.wait_for(is_200, timeout=15)
        context = ssl.create_default_context(cafile=str(ca[1]))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", status_port, timeout=5, context=context
        )
        try:
            connection.request("GET", "/status", headers={"Authorization": "Bearer tls-token"})
            response = connection.getresponse()
            assert response.status == 200 and b'"n1"' in response.read()
            connection.request("GET", "/status")
            response = connection.getresponse()
            assert response.status == 401
            response.read()
        finally:
            connection.close()
        # plain HTTP on the TLS port gets no status document
        status, _ = request_or_error(status_port, "/status", "tls-token")
        assert status != 200
        assert agent.get("/health").status == 200  # the LB's listener stays plain HTTP


def request_or_error(port: int, path: str, token: str) -> tuple[int, str]:
    try:
        return request(port, path, token)
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc)

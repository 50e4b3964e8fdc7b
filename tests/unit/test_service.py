"""The agent in-process (service.Agent): every listener `serve` binds answers on loopback ports,
a drain answers 503 `draining` and then stops it, a second drain stops it at once, and a port in
use is one line with nothing left open.

No MariaDB: the node is a refused port, so the verdict is 503 `unreachable`, and what is tested
is the wiring around it (the same paths against real Galera nodes and the real process:
tests/integration/test_policies.py, test_chart_contract.py, test_agent_check.py).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from galera_health.config import load_settings
from galera_health.service import Agent, StartError
from galera_health.testbed import free_ports

LIMIT = 20.0  # seconds: generous bounds for a busy 2-core machine; events end every wait early


def get(port: int, path: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    if context is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=5
        )
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def agent_check(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.makefile().readline()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {LIMIT:g} s: {what}"
        time.sleep(0.02)


def self_signed(folder: Path) -> tuple[Path, Path]:
    key, cert = folder / "status.key", folder / "status.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=galera-health test", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


def settings_for(ports: list[int], **extra: Any) -> Any:
    return load_settings(
        {
            "nodes": ["n1=127.0.0.1:1"],  # refused at once: a verdict within the first poll
            "user": "health",
            "listen": f"127.0.0.1:{ports[0]}",
            **extra,
        },
        {},
    )


@contextmanager
def running(agent: Agent) -> Iterator[threading.Thread]:
    """start() here, run() in a thread as `serve` runs it in the main one; always stopped."""
    agent.start()
    thread = threading.Thread(target=agent.run, name="agent-under-test", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stop()
        thread.join(LIMIT)


def test_the_agent_serves_every_listener_drains_and_stops(tmp_path: Path) -> None:
    ports = free_ports(3)
    key, cert = self_signed(tmp_path)
    agent = Agent(
        settings_for(
            ports,
            status_listen=f"127.0.0.1:{ports[1]}",
            status_tls_cert=str(cert),
            status_tls_key=str(key),
            agent_check_listen=f"127.0.0.1:{ports[2]}",
            drain_seconds="0.5",
        )
    )
    tls = ssl.create_default_context(cafile=str(cert))
    with running(agent) as thread:
        assert get(ports[0], "/livez") == (200, "ok\n")
        wait_until(lambda: "unreachable" in get(ports[0], "/health")[1], "the first verdict")
        status, body = get(ports[0], "/health")
        assert status == 503 and body.startswith("n1: unreachable"), body
        status, body = get(ports[1], "/status", tls)
        assert status == 200 and json.loads(body)["nodes"]["n1"]["state"] == "unreachable"
        assert agent_check(ports[2]).startswith("down #n1: unreachable")

        assert agent.drain()
        drained = time.monotonic()
        status, body = get(ports[0], "/health")
        assert (status, body) == (503, "n1: draining (agent stopping, exit in 0.5 s)\n")
        assert get(ports[0], "/livez")[0] == 200  # still serving while it drains
        assert json.loads(get(ports[1], "/status", tls)[1])["draining"].startswith("agent")
        assert agent_check(ports[2]).startswith("drain #n1: draining")

        assert agent.stopped.wait(LIMIT), "the drain never ended"
        assert time.monotonic() - drained >= 0.5  # the timer cannot fire early
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert all(refused(port) for port in ports), "a listener was left open"
    agent.stop()  # idempotent


def test_a_second_drain_stops_at_once_and_stop_ends_run() -> None:
    ports = free_ports(1)
    agent = Agent(settings_for(ports, drain_seconds="600"))
    with running(agent) as thread:
        assert get(ports[0], "/livez")[0] == 200
        assert agent.drain()
        assert get(ports[0], "/health")[0] == 503
        assert not agent.drain()  # a second SIGTERM: at once, not after 600 s
        assert agent.stopped.wait(LIMIT)
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert refused(ports[0])

    agent = Agent(settings_for(ports))
    with running(agent) as thread:
        assert get(ports[0], "/livez")[0] == 200
        agent.stop()  # SIGINT
        assert agent.stopped.wait(LIMIT)
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert refused(ports[0])


def test_a_port_in_use_is_one_line_and_nothing_is_left_open() -> None:
    ports = free_ports(2)
    with socket.create_server(("127.0.0.1", ports[1])):
        agent = Agent(settings_for(ports, status_listen=f"127.0.0.1:{ports[1]}"))
        with pytest.raises(StartError) as failed:
            agent.start()
    message = str(failed.value)
    assert message.startswith(f"cannot listen on 127.0.0.1:{ports[1]}: "), message
    assert "\n" not in message and "stop what uses that port" in message
    assert agent.stopped.is_set() and refused(ports[0])  # the main listener was closed
    assert not agent.poller.liveness()[0]  # and no job was started
    agent.run()  # returns at once: there is nothing to serve

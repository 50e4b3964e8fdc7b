"""The agent-check line per state, and the listener on a loopback port around a store filled by
hand: what HAProxy reads, and that no client can hold it, feed it or make it act."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from galera_health.agent_check import MAX_REASON, AgentCheckServer, agent_reply
from galera_health.maintenance import Maintenance
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot, evaluate

from ..samples import SYNCED
from .conftest import Clock

NON_PRIMARY = Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary"))


def put(store: VerdictStore, node: str, observation: Snapshot | ProbeError, now: float) -> None:
    store.publish(evaluate(observation, Policy(), store.latest(node), node, now, 1e9, 0.003))


@pytest.fixture
def store(clock: Clock) -> VerdictStore:
    store = VerdictStore(["n1", "n2"], max_age=5.0, clock=clock)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    put(store, "n2", Snapshot(SYNCED), clock.now)
    return store


def maintenance(reason: str = "kernel upgrade") -> Maintenance:
    return Maintenance(reason, 1.0, "ops", "/tmp/maintenance.n1")


def test_usable_is_up_ready(store: VerdictStore) -> None:
    assert agent_reply(store.views()) == "up ready\n"


def test_maintenance_and_drain_are_drain(store: VerdictStore) -> None:
    store.set_maintenance({"n1": maintenance()})
    assert agent_reply(store.views()) == ("drain #n1: maintenance (kernel upgrade; by ops)\n")
    store.set_maintenance({})
    assert agent_reply(store.views()) == "up ready\n"
    store.start_drain("agent stopping, exit in 11 s")
    assert agent_reply(store.views()) == (
        "drain #n1: draining (agent stopping, exit in 11 s); "
        "n2: draining (agent stopping, exit in 11 s)\n"
    )


def test_a_fault_is_down_with_its_reason_and_wins_over_maintenance(
    store: VerdictStore, clock: Clock
) -> None:
    put(store, "n2", NON_PRIMARY, clock.now)
    assert (
        agent_reply(store.views()) == "down #n2: non_primary (wsrep_cluster_status=non-Primary)\n"
    )
    store.set_maintenance({"n1": maintenance()})
    assert agent_reply(store.views()).startswith("down #n2: non_primary")
    put(store, "n2", ProbeError("timeout", "no answer within 2 s"), clock.now)
    assert agent_reply(store.views()).startswith("down #n2: timeout")


def test_starting_and_stale_are_down(clock: Clock) -> None:
    store = VerdictStore(["n1"], max_age=5.0, clock=clock)
    assert agent_reply(store.views()) == "down #n1: starting (no verdict yet)\n"
    put(store, "n1", Snapshot(SYNCED), clock.now)
    assert agent_reply(store.views()) == "up ready\n"
    clock.now += 6
    assert agent_reply(store.views()).startswith("down #n1: stale (")


def test_the_reason_is_one_bounded_line_of_ascii(clock: Clock) -> None:
    store = VerdictStore(["n1"], max_age=5.0, clock=clock)
    store.set_maintenance({"n1": maintenance("evil\r\nup ready\x00ünïcode" + "x" * 500)})
    line = agent_reply(store.views())
    assert line.startswith("drain #n1: maintenance (evil??up ready??n?code")
    assert line.count("\n") == 1 and line.endswith("...\n") and "\r" not in line
    assert len(line) == len("drain #") + MAX_REASON + 1
    assert line.isascii()


# ---------------------------------------------------------------------- the listener


@pytest.fixture
def server(store: VerdictStore) -> Iterator[AgentCheckServer]:
    made = AgentCheckServer(store, "127.0.0.1", 0, linger=0.5, max_connections=8)
    made.start()
    try:
        yield made
    finally:
        made.close()


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        piece = sock.recv(4096)
        if not piece:
            return data
        data += piece


def ask(server: AgentCheckServer, send: bytes = b"") -> bytes:
    with socket.create_connection(server.address, timeout=5) as sock:
        if send:
            sock.sendall(send)
        return read_all(sock)


def test_listener_answers_and_closes(server: AgentCheckServer, store: VerdictStore) -> None:
    assert ask(server) == b"up ready\n"
    assert ask(server, b"n1\n") == b"up ready\n"  # what HAProxy's agent-send may add
    store.set_maintenance({"n2": maintenance()})
    assert ask(server) == b"drain #n2: maintenance (kernel upgrade; by ops)\n"


def test_no_command_is_acted_on(server: AgentCheckServer, store: VerdictStore) -> None:
    store.set_maintenance({"n2": maintenance()})
    for command in (b"ready\n", b"up\n", b"maint\n", b"set n2 up\r\n", b"\x00" * 100):
        assert ask(server, command).startswith(b"drain #n2"), command
    store.set_maintenance({})
    for command in (b"drain\n", b"down\n"):
        assert ask(server, command) == b"up ready\n"


def test_an_idle_client_is_answered_at_once_and_closed_after_the_linger(
    server: AgentCheckServer,
) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        started = time.monotonic()
        assert read_all(sock) == b"up ready\n"  # EOF: the agent closed
        assert time.monotonic() - started < 3.0


def test_a_flood_is_bounded_and_closed(server: AgentCheckServer) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.settimeout(5)
        first = sock.recv(100)
        assert first == b"up ready\n"
        sent = 0
        with pytest.raises(OSError):  # reset or broken pipe once the agent stops reading
            for _ in range(10_000):
                sock.sendall(b"x" * 65536)
                sent += 65536
        assert sent < 64 << 20


def test_many_connections_beyond_the_bound_are_answered_and_fds_come_back(
    server: AgentCheckServer,
) -> None:
    pid = os.getpid()
    before = len(os.listdir(f"/proc/{pid}/fd"))
    clients = [socket.create_connection(server.address, timeout=5) for _ in range(40)]
    try:
        for sock in clients:
            sock.settimeout(5)
            assert sock.recv(100) == b"up ready\n"
        assert server.active <= server.max_connections
    finally:
        for sock in clients:
            sock.close()
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{pid}/fd")) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= before
    assert server.active == 0
    assert ask(server) == b"up ready\n"


def test_a_port_in_use_is_an_error_at_construction(
    server: AgentCheckServer, store: VerdictStore
) -> None:
    with pytest.raises(OSError):
        AgentCheckServer(store, "127.0.0.1", server.address[1])

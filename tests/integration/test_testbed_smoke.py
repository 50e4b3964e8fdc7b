"""Smoke test of the test bed and the fault servers against a real 3-node Galera cluster."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import mysql.connector
import pytest

from galera_health.testbed import GaleraTestbed, TestbedNode
from testkit.fault_servers import Blackhole, SilentServer, StallingProxy

pytestmark = pytest.mark.galera

LOCAL_STATE_QUERY = (
    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
    " WHERE VARIABLE_NAME='WSREP_LOCAL_STATE'"
)
TIMEOUTS: dict[str, Any] = {"connection_timeout": 1, "read_timeout": 1, "write_timeout": 1}


@pytest.fixture
def bed(synced_cluster: GaleraTestbed) -> GaleraTestbed:
    """The session's one cluster (see conftest): Synced before and after each test."""
    return synced_cluster


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except Exception:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _monitor_query(bed: GaleraTestbed, **where: Any) -> str:
    conn = mysql.connector.connect(
        use_pure=True, user=bed.monitor_user, password=bed.monitor_password, **where, **TIMEOUTS
    )
    try:
        cur = conn.cursor()
        cur.execute(LOCAL_STATE_QUERY)
        rows = cur.fetchall()
        assert len(rows) == 1
        row = rows[0]
        assert isinstance(row, tuple)
        return str(row[0])
    finally:
        conn.close()


def test_cluster_is_synced(bed: GaleraTestbed) -> None:
    for node in bed.nodes:
        node.wait_synced(timeout=10)
        assert node.status("wsrep_cluster_size") == "3"
        assert node.status("wsrep_cluster_status") == "Primary"
    assert os.stat(bed.password_file).st_mode & 0o777 == 0o600
    with open(bed.password_file) as handle:
        assert handle.read() == bed.monitor_password


def test_monitor_user_over_tcp_and_socket(bed: GaleraTestbed) -> None:
    for node in bed.nodes:
        assert _monitor_query(bed, host=node.host, port=node.port) == "4"
        assert _monitor_query(bed, unix_socket=node.socket) == "4"
    grants = bed.node("n2").sql(f"SHOW GRANTS FOR '{bed.monitor_user}'@'127.0.0.1'")
    assert len(grants) == 1 and grants[0][0].startswith("GRANT USAGE ON *.*")


def test_isolate_n3(bed: GaleraTestbed) -> None:
    n3 = bed.node("n3")
    n3.isolate(True)
    try:
        took = _wait_for(
            lambda: n3.status("wsrep_cluster_status") != "Primary", 30, "n3 non-Primary"
        )
        print(f"n3 non-Primary {took:.1f} s after isolate")
    finally:
        n3.isolate(False)
    n3.wait_synced(timeout=60)
    assert n3.status("wsrep_cluster_size") == "3"


def test_kill_and_restart_n2(bed: GaleraTestbed) -> None:
    n2 = bed.node("n2")
    n2.kill()
    assert not n2.is_running() and n2.pid is None
    _wait_for(lambda: bed.node("n1").status("wsrep_cluster_size") == "2", 30, "n1 to see 2 nodes")
    started = time.monotonic()
    n2.start()
    n2.wait_synced()
    print(f"n2 restart after kill -9: {time.monotonic() - started:.1f} s")
    assert n2.status("wsrep_cluster_size") == "3"


def test_stop_and_restart_bootstrap_node(bed: GaleraTestbed) -> None:
    n1 = bed.node("n1")
    n1.sql("CREATE DATABASE IF NOT EXISTS smoke")
    n1.sql("CREATE TABLE IF NOT EXISTS smoke.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
    n1.stop()
    assert not n1.is_running()
    bed.node("n2").sql("INSERT INTO smoke.t (v) VALUES (42)")  # n1 must catch up on rejoin
    started = time.monotonic()
    n1.start()
    n1.wait_synced()
    print(f"n1 restart after clean stop: {time.monotonic() - started:.1f} s")
    assert n1.status("wsrep_cluster_size") == "3"
    assert n1.sql("SELECT v FROM smoke.t") == [["42"]]
    uuids = {node.status("wsrep_cluster_state_uuid") for node in bed.nodes}
    assert len(uuids) == 1  # n1 joined the existing cluster, it did not bootstrap a new one


def test_freeze_and_thaw(bed: GaleraTestbed) -> None:
    n3 = bed.node("n3")
    n3.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(mysql.connector.Error):
            _monitor_query(bed, host=n3.host, port=n3.port)
        assert time.monotonic() - started < 3.5
    finally:
        n3.thaw()
    n3.wait_synced(timeout=90)


def _assert_connect_fails_fast(**where: Any) -> float:
    started = time.monotonic()
    with pytest.raises(mysql.connector.Error):
        conn = mysql.connector.connect(
            use_pure=True, user="health", password="x", **where, **TIMEOUTS
        )
        try:
            conn.cursor().execute("SELECT 1")
        finally:
            conn.close()
    took = time.monotonic() - started
    assert took < 3.5, took
    return took


def test_silent_server() -> None:
    with SilentServer() as server:
        took = _assert_connect_fails_fast(host="127.0.0.1", port=server.port)
        assert server.accepted == 1
        print(f"silent server: failed after {took:.2f} s")


def test_blackhole() -> None:
    with Blackhole() as hole:
        took = _assert_connect_fails_fast(host="127.0.0.1", port=hole.port)
        print(f"blackhole: failed after {took:.2f} s")


def test_stalling_proxy_swallows_auth(bed: GaleraTestbed) -> None:
    node: TestbedNode = bed.node("n1")
    with StallingProxy(node.host, node.port) as proxy:
        took = _assert_connect_fails_fast(host="127.0.0.1", port=proxy.port)
        assert proxy.greetings_forwarded == 1
        print(f"stalling proxy (auth): failed after {took:.2f} s")


def test_stalling_proxy_stalls_a_query(bed: GaleraTestbed) -> None:
    node = bed.node("n1")
    with StallingProxy(node.host, node.port, stall_after_greeting=False) as proxy:
        conn = mysql.connector.connect(
            use_pure=True,
            host="127.0.0.1",
            port=proxy.port,
            user=bed.monitor_user,
            password=bed.monitor_password,
            **TIMEOUTS,
        )
        try:
            cur = conn.cursor()
            cur.execute(LOCAL_STATE_QUERY)
            assert cur.fetchall() == [("4",)]
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(mysql.connector.Error):
                cur.execute(LOCAL_STATE_QUERY)
                cur.fetchall()
            took = time.monotonic() - started
            assert took < 3.5, took
            print(f"stalling proxy (query): failed after {took:.2f} s")
        finally:
            conn.close()

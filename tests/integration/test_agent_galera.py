"""The agent as a real process against a real 3-node MariaDB Galera cluster.

Bounds are generous (interval + timeout + slack): these machines are shared and noisy. Speed is
measured in bench/, not asserted here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess, Answer, run_cli
from testkit.fault_servers import Blackhole, SilentServer, StallingProxy

from .helpers import (
    CONNECT_TIMEOUT,
    INTERVAL,
    READ_TIMEOUT,
    SLACK,
    TIMING,
    ConnectionAttempts,
    agent_at,
    agent_for,
    is_200,
    is_503,
)

pytestmark = pytest.mark.galera


def test_all_synced_is_200(synced_cluster: GaleraTestbed) -> None:
    with agent_for(synced_cluster, "n1", "n2", "n3") as agent:
        _, answer = agent.wait_for(is_200, timeout=15)
        assert answer.body == "n1: synced; n2: synced; n3: synced\n"
        assert answer.headers["cache-control"] == "no-store"
        for name in ("n1", "n2", "n3"):
            one = agent.get(f"/health/{name}")
            assert (one.status, one.body) == (200, f"{name}: synced\n")
        assert agent.get("/readyz").status == 200
        assert agent.get("/livez").status == 200
        document = agent.status()
        n2 = document["nodes"]["n2"]
        assert n2["healthy"] and n2["state"] == "synced" and n2["fault"] is None
        assert n2["facts"]["wsrep_cluster_size"] == "3"
        assert n2["facts"]["wsrep_local_state"] == "4"
        assert 0 <= n2["age_seconds"] < 3 and n2["poll_ms"] > 0
        assert agent.get("/health/n9").status == 404
        assert synced_cluster.monitor_password not in agent.get("/status").body
    assert synced_cluster.monitor_password not in agent.output()


def test_unix_socket_node(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n1")
    with agent_at(synced_cluster, f"local={node.socket}") as agent:
        _, answer = agent.wait_for(is_200, timeout=15)
        assert answer.body == "local: synced\n"


def test_node_shut_down_is_unreachable_then_back(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n3")
    with agent_for(synced_cluster, "n3") as agent:
        agent.wait_for(is_200, timeout=15)
        node.stop()
        stopped = time.monotonic()
        agent.wait_for(is_503, timeout=30)
        detected = time.monotonic() - stopped
        assert detected <= INTERVAL + SLACK, detected
        # A server in the middle of its shutdown may leave the poll unanswered (a timeout);
        # once it is gone, the reason is that it refuses connections.
        agent.wait_for(
            lambda a: a.body.startswith("n3: unreachable"), timeout=INTERVAL + READ_TIMEOUT + SLACK
        )
        node.start()
        node.wait_synced()
        agent.wait_for(is_200, timeout=30)


def test_kill_9_then_restart_reconnects(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n2")
    with agent_for(synced_cluster, "n2") as agent:
        agent.wait_for(is_200, timeout=15)
        node.kill()
        killed = time.monotonic()
        agent.wait_for(is_503, timeout=30)
        assert time.monotonic() - killed <= INTERVAL + SLACK
        node.start()
        agent.wait_for(is_200, timeout=120)
        assert node.status("wsrep_local_state") == "4"


def test_frozen_node_is_503_fast_probes_stay_fast_and_no_flap_after_thaw(
    synced_cluster: GaleraTestbed,
) -> None:
    node = synced_cluster.node("n3")
    with agent_for(synced_cluster, "n3") as agent:
        agent.wait_for(is_200, timeout=15)
        node.freeze()
        frozen_at = time.monotonic()
        agent.wait_for(is_503, timeout=30, interval=0.02)
        detected = time.monotonic() - frozen_at
        assert detected <= INTERVAL + READ_TIMEOUT + SLACK, detected
        # Every probe during the freeze is answered from the cache.
        latencies = []
        while time.monotonic() - frozen_at < 10:  # long enough for the others to evict n3
            answer = agent.get(timeout=2)
            latencies.append(answer.seconds)
            assert answer.status == 503, answer
            time.sleep(0.02)
        assert max(latencies) < 0.1, f"slowest probe {max(latencies) * 1000:.0f} ms"
        node.thaw()
        # After the thaw: no 200 until n3 is really back in the Primary component, then 200s.
        answers: list[tuple[float, Answer]] = []
        first_200: float | None = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answer = agent.get()
            now = time.monotonic()
            answers.append((now, answer))
            if answer.status == 200 and first_200 is None:
                first_200 = now
                facts = node.statuses(["wsrep_cluster_status", "wsrep_local_state"])
                assert facts["wsrep_cluster_status"] == "Primary", facts
                assert facts["wsrep_local_state"] == "4", facts
            if first_200 is not None and now - first_200 > 5:
                break
            time.sleep(0.05)
        assert first_200 is not None, answers[-1]
        timeline = []
        for t, a in answers:
            state = a.body.split(":")[1].split()[0] if ":" in a.body else str(a.status)
            if not timeline or timeline[-1][1] != state:
                timeline.append((round(t - answers[0][0], 1), state))
        print("after thaw:", timeline)
        after = [a for t, a in answers if t >= first_200]
        assert all(a.status == 200 for a in after), [a.body for a in after if a.status != 200]
        states = {a.body.split(":")[1].split()[0] for _, a in answers if a.status == 503}
        assert states & {"non_primary", "recovering", "timeout"}, states


def test_split_node_is_non_primary_then_back(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n1")
    with agent_for(synced_cluster, "n1") as agent:
        agent.wait_for(is_200, timeout=15)
        node.isolate(True)
        _, answer = agent.wait_for(is_503, timeout=30)
        assert answer.body.startswith("n1: non_primary (wsrep_cluster_status=non-Primary)"), answer
        node.isolate(False)
        agent.wait_for(is_200, timeout=60)


@pytest.mark.parametrize(
    ("statement", "undo", "state"),
    [
        ("SET GLOBAL wsrep_desync = ON", "SET GLOBAL wsrep_desync = OFF", "desynced"),
        ("SET GLOBAL read_only = ON", "SET GLOBAL read_only = OFF", "read_only"),
        (
            "SET GLOBAL wsrep_reject_queries = ALL",
            "SET GLOBAL wsrep_reject_queries = NONE",
            "rejecting_queries",
        ),
    ],
)
def test_operator_states_are_503(
    synced_cluster: GaleraTestbed, statement: str, undo: str, state: str
) -> None:
    node = synced_cluster.node("n2")
    with agent_for(synced_cluster, "n2") as agent:
        agent.wait_for(is_200, timeout=15)
        node.sql(statement)
        try:
            _, answer = agent.wait_for(is_503, timeout=INTERVAL + SLACK + 3)
            assert answer.body.startswith(f"n2: {state} ("), answer
        finally:
            node.sql(undo)
        agent.wait_for(is_200, timeout=30)


def test_server_without_greeting_is_503_in_bounded_time(synced_cluster: GaleraTestbed) -> None:
    with (
        SilentServer() as silent,
        agent_at(synced_cluster, f"silent=127.0.0.1:{silent.port}") as agent,
    ):
        answer = agent.get()
        assert answer.status == 503
        # the first verdict arrives after one connect deadline, and it names the timeout
        _, answer = agent.wait_for(lambda a: "timeout" in a.body, timeout=CONNECT_TIMEOUT + SLACK)
        assert answer.status == 503 and "while connecting" in answer.body
        assert agent.get("/livez").status == 200


def test_blackholed_port_is_503_in_bounded_time(synced_cluster: GaleraTestbed) -> None:
    with (
        Blackhole() as hole,
        agent_at(synced_cluster, f"hole=127.0.0.1:{hole.port}") as agent,
    ):
        _elapsed, answer = agent.wait_for(
            lambda a: "timeout" in a.body, timeout=CONNECT_TIMEOUT + INTERVAL + SLACK
        )
        assert answer.status == 503


def test_greeting_then_stall_is_503_in_bounded_time(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n1")
    with (
        StallingProxy(node.host, node.port, stall_after_greeting=True) as proxy,
        agent_at(synced_cluster, f"proxied=127.0.0.1:{proxy.port}") as agent,
    ):
        _, answer = agent.wait_for(
            lambda a: "timeout" in a.body, timeout=CONNECT_TIMEOUT + INTERVAL + SLACK
        )
        assert answer.status == 503


def test_query_stalled_mid_flight_is_503_then_recovers(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n1")
    with (
        StallingProxy(node.host, node.port, stall_after_greeting=False) as proxy,
        agent_at(synced_cluster, f"proxied=127.0.0.1:{proxy.port}", ["--hold-down", "1"]) as agent,
    ):
        agent.wait_for(is_200, timeout=15)
        proxy.stall()
        stalled = time.monotonic()
        _, answer = agent.wait_for(is_503, timeout=INTERVAL + READ_TIMEOUT + SLACK)
        assert time.monotonic() - stalled <= INTERVAL + READ_TIMEOUT + SLACK
        assert "timeout" in answer.body
        proxy.resume()
        agent.wait_for(is_200, timeout=15)


def test_wrong_password_is_access_denied_logged_once(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    node = synced_cluster.node("n1")
    attempts = ConnectionAttempts(node)
    with AgentProcess(
        [f"n1={node.address()}"], synced_cluster.monitor_user, str(wrong), TIMING
    ) as agent:
        _, answer = agent.wait_for(is_503, timeout=10)
        _, answer = agent.wait_for(lambda a: "access_denied" in a.body, timeout=10)
        assert answer.body.startswith("n1: access_denied (the agent's login was refused")
        assert agent.status()["nodes"]["n1"]["fault"] == "agent"
        attempts.wait_for(attempts.count() + 2, timeout=60)  # refused again, still logged once
        log = agent.output()
        assert log.count("access_denied") == 1, log
        assert "not-the-password" not in log and "not-the-password" not in agent.get("/status").body


def test_thread_and_connection_count_flat_over_8_freezes(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n2")
    with agent_for(synced_cluster, "n2", extra=["--hold-down", "0"]) as agent:
        agent.wait_for(is_200, timeout=15)
        time.sleep(2)
        threads_before = agent.threads()
        most_connections = 0
        for _cycle in range(8):
            node.freeze()
            try:
                # long enough for the read deadline to fire, short of an eviction (PT3S)
                until = time.monotonic() + 1.6
                while time.monotonic() < until:
                    most_connections = max(most_connections, agent.tcp_connections_to(node.port))
                    time.sleep(0.1)
            finally:
                node.thaw()
            agent.wait_for(is_200, timeout=30, interval=0.1)
            most_connections = max(most_connections, agent.tcp_connections_to(node.port))
            rows = node.sql(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                f"WHERE USER = '{synced_cluster.monitor_user}'"
            )
            assert int(rows[0][0]) <= 1, rows
        assert most_connections <= 1, most_connections
        assert agent.threads() <= threads_before + 1, (threads_before, agent.threads())


def test_bad_input_exits_2_with_one_line(synced_cluster: GaleraTestbed) -> None:
    run = run_cli
    node = synced_cluster.node("n1")
    common = ["--user", "health", "--password-file", synced_cluster.password_file]
    bad = run("serve", "--node", "n1=127.0.0.1:70000", *common)
    assert bad.returncode == 2 and "1-65535" in bad.stderr and "Traceback" not in bad.stderr
    missing = run(
        "serve", "--node", f"n1={node.address()}", "--user", "h", "--password-file", "/nope"
    )
    assert missing.returncode == 2 and "cannot read password_file '/nope'" in missing.stderr
    with agent_for(synced_cluster, "n1") as agent:
        busy = run(
            "serve",
            "--node",
            f"n1={node.address()}",
            *common,
            "--listen",
            f"127.0.0.1:{agent.port}",
        )
        assert busy.returncode == 2 and "cannot listen on" in busy.stderr, busy.stderr
        assert "Traceback" not in busy.stderr
    ok = run("check", "--node", f"n1={node.address()}", *common)
    assert (ok.returncode, ok.stdout) == (0, "n1: synced\n")
    down = run("check", "--node", "n1=127.0.0.1:1", *common)
    assert down.returncode == 1 and down.stdout.startswith("n1: unreachable")
    denied = run(
        "check",
        "--node",
        f"n1={node.address()}",
        "--user",
        "nobody_here",
        "--password-file",
        synced_cluster.password_file,
    )
    assert denied.returncode == 2 and "access_denied" in denied.stdout


def test_unsupported_auth_plugin_is_named(synced_cluster: GaleraTestbed, tmp_path: Path) -> None:
    node = synced_cluster.node("n1")
    plugins = node.sql(
        "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='ed25519'"
    )
    if not plugins:
        node.sql("INSTALL SONAME 'auth_ed25519'")
    node.sql(
        "CREATE USER IF NOT EXISTS 'ed_monitor'@'127.0.0.1' "
        "IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')"
    )
    password = tmp_path / "pw"
    password.write_text("ed-pw")
    try:
        result = run_cli(
            "check",
            "--node",
            f"n1={node.address()}",
            "--user",
            "ed_monitor",
            "--password-file",
            str(password),
        )
        assert result.returncode == 2, result
        assert result.stdout.startswith("n1: auth_plugin_unsupported ("), result.stdout
        assert "mysql_native_password" in result.stdout and "ed-pw" not in result.stdout
    finally:
        node.sql("DROP USER IF EXISTS 'ed_monitor'@'127.0.0.1'")

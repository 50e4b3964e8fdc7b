"""Operating policies, maintenance, drain, reload and password rotation, on the real cluster."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pytest

from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess, Answer, run_cli

from .helpers import SLACK, TIMING, ConnectionAttempts, agent_for, is_200, is_503

pytestmark = pytest.mark.galera

ADMIN = ("policy_admin", "admin-pw-7c1")


@pytest.fixture
def admin(synced_cluster: GaleraTestbed) -> Iterator[GaleraTestbed]:
    """An account with the rights a test needs to make load and take locks."""
    user, password = ADMIN
    synced_cluster.node("n1").sql(
        f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"GRANT ALL ON *.* TO '{user}'@'127.0.0.1'; "
        "CREATE DATABASE IF NOT EXISTS policy_test; "
        "CREATE TABLE IF NOT EXISTS policy_test.load (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"
    )
    yield synced_cluster


def connect_admin(cluster: GaleraTestbed, name: str) -> mysql.connector.MySQLConnection:
    node = cluster.node(name)
    connection = mysql.connector.connect(
        host=node.host,
        port=node.port,
        user=ADMIN[0],
        password=ADMIN[1],
        use_pure=True,
        autocommit=True,
        connection_timeout=5,
        read_timeout=30,
    )
    assert isinstance(connection, mysql.connector.MySQLConnection)
    return connection


def starts_with(prefix: str) -> object:
    return lambda a: a.body.startswith(prefix)


def test_manual_desync_stays_503_even_when_donors_are_allowed(
    synced_cluster: GaleraTestbed,
) -> None:
    node = synced_cluster.node("n2")
    with agent_for(synced_cluster, "n2", extra=["--available-when-donor"]) as agent:
        agent.wait_for(is_200, timeout=15)
        node.sql("SET GLOBAL wsrep_desync = ON")
        try:
            _, answer = agent.wait_for(is_503, timeout=5)
            assert answer.body.startswith("n2: desynced (wsrep_local_state=2"), answer
            assert "wsrep_desync=ON" in answer.body
        finally:
            node.sql("SET GLOBAL wsrep_desync = OFF")
        agent.wait_for(is_200, timeout=30)


def test_read_only_with_and_without_the_option(synced_cluster: GaleraTestbed) -> None:
    node = synced_cluster.node("n3")
    with (
        agent_for(synced_cluster, "n3") as strict,
        agent_for(synced_cluster, "n3", extra=["--available-when-readonly"]) as reader,
    ):
        strict.wait_for(is_200, timeout=15)
        reader.wait_for(is_200, timeout=15)
        node.sql("SET GLOBAL read_only = ON")
        try:
            # Setting read_only pauses and desyncs the node for a moment (state 2, "donor"):
            # under load the agent can see that first. The verdict that stays is read_only.
            _, answer = strict.wait_for(
                lambda a: a.body == "n3: read_only (read_only=ON)\n", timeout=10
            )
            assert answer.status == 503
            _, answer = reader.wait_for(starts_with("n3: read_only (read_only=ON, allowed"))
            assert answer.status == 200
            assert reader.status()["nodes"]["n3"]["policy"]["healthy_states"] == [
                "synced",
                "read_only",
            ]
        finally:
            node.sql("SET GLOBAL read_only = OFF")
        strict.wait_for(is_200, timeout=15)


def test_donor_kept_only_by_policy_and_lag_takes_it_out(admin: GaleraTestbed) -> None:
    """FTWRL desyncs a node like a donor (state 2, wsrep_desync OFF) and stops its applier,
    so writes on another node pile up in its receive queue."""
    with (
        agent_for(admin, "n3") as strict,
        agent_for(
            admin, "n3", extra=["--available-when-donor", "--max-recv-queue", "5"]
        ) as tolerant,
    ):
        strict.wait_for(is_200, timeout=15)
        tolerant.wait_for(is_200, timeout=15)
        locked = connect_admin(admin, "n3")
        writer = connect_admin(admin, "n1")
        try:
            locked.cursor().execute("FLUSH TABLES WITH READ LOCK")
            _, answer = strict.wait_for(is_503, timeout=5)
            assert answer.body.startswith("n3: donor (wsrep_local_state=2 (Donor/Desynced))")
            _, answer = tolerant.wait_for(starts_with("n3: donor ("), timeout=5)
            assert answer.status == 200 and "allowed by available_when_donor" in answer.body
            cursor = writer.cursor()
            for value in range(30):
                cursor.execute("INSERT INTO policy_test.load (v) VALUES (%s)", (value,))
            _, answer = tolerant.wait_for(is_503, timeout=5)
            assert answer.body.startswith("n3: lagging (wsrep_local_recv_queue="), answer
            assert "> max_recv_queue 5" in answer.body
        finally:
            locked.cursor().execute("UNLOCK TABLES")
            locked.close()
            writer.close()
        tolerant.wait_for(is_200, timeout=30)
        strict.wait_for(is_200, timeout=30)


def test_too_many_connections_is_the_agents_fault_without_a_retry_storm(
    synced_cluster: GaleraTestbed,
) -> None:
    node = synced_cluster.node("n1")
    node.sql("SET GLOBAL max_connections = 10")  # MariaDB's minimum
    fillers: list[mysql.connector.MySQLConnection] = []
    try:
        while True:
            try:
                fillers.append(
                    mysql.connector.connect(  # type: ignore[arg-type]
                        host=node.host,
                        port=node.port,
                        user=synced_cluster.monitor_user,
                        password=synced_cluster.monitor_password,
                        use_pure=True,
                        connection_timeout=3,
                    )
                )
            except mysql.connector.Error as exc:
                assert exc.errno == 1040, exc
                break
            assert len(fillers) < 50
        attempts = ConnectionAttempts(node)
        with agent_for(synced_cluster, "n1") as agent:
            _, answer = agent.wait_for(starts_with("n1: too_many_connections"), timeout=10)
            refused = time.monotonic()
            assert answer.status == 503
            assert agent.status()["nodes"]["n1"]["fault"] == "agent"
            # Two more attempts: every interval (1 s) they would take 2 s; the backoff (2, then
            # 4 s after the first refusals) makes it about 6 s.
            attempts.wait_for(attempts.count() + 2, timeout=60)
            waited = time.monotonic() - refused
            log = agent.output()
        assert waited >= 4.5, waited
        assert log.count("too_many_connections") == 1, log
    finally:
        for filler in fillers:
            filler.close()
        node.sql("SET GLOBAL max_connections = 100")


def test_maintenance_by_cli_and_by_file_at_once_and_across_restarts(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    state = str(tmp_path)
    extra = ["--state-dir", state]
    # the maintenance command checks --node against the agent's nodes: the same list
    watched = {"GALERA_HEALTH_NODES": ",".join(f"{n}={synced_cluster.node(n).address()}"
                                               for n in ("n1", "n2"))}  # fmt: skip
    with agent_for(synced_cluster, "n1", "n2", extra=extra) as agent:
        agent.wait_for(is_200, timeout=15)
        done = run_cli(
            "maintenance", "on", "--node", "n1", "--state-dir", state, "--reason", "kernel",
            env=watched,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        switched = time.monotonic()
        _, answer = agent.wait_for(is_503, path="/health/n1", timeout=5, interval=0.02)
        assert time.monotonic() - switched < 1.0  # at once, not at the next poll
        assert answer.body.startswith("n1: maintenance (kernel (set by root@")
        assert agent.get("/health/n2").status == 200
        record = agent.status()["nodes"]["n1"]["maintenance"]
        assert record["by"] == "root" and record["reason"].startswith("kernel")
        assert 'galera_health_maintenance{node="n1"} 1.0' in agent.get("/metrics").body
    # survives a restart of the agent: the first answer is already maintenance
    with agent_for(synced_cluster, "n1", "n2", extra=extra) as agent:
        first = agent.get("/health/n1")
        assert first.body.startswith("n1: maintenance"), first
        run_cli("maintenance", "off", "--node", "n1", "--state-dir", state, env=watched)
        agent.wait_for(is_200, path="/health/n1", timeout=5)
        # a plain file, as `kubectl exec <db container> -- touch` would make it
        (tmp_path / "maintenance").write_text("")
        _, answer = agent.wait_for(is_503, timeout=3, interval=0.02)
        assert answer.body == "n1: maintenance; n2: maintenance\n"
        (tmp_path / "maintenance").unlink()
        agent.wait_for(is_200, timeout=3)
        log = agent.output()
    assert "n1: synced -> maintenance" in log and "n1: maintenance -> synced" in log


def test_sigterm_drains_then_exits_0(synced_cluster: GaleraTestbed) -> None:
    agent = agent_for(synced_cluster, "n2", extra=["--drain-seconds", "3"])
    try:
        agent.wait_for(is_200, timeout=15)
        os.kill(agent.pid, signal.SIGTERM)
        sent = time.monotonic()
        _, answer = agent.wait_for(is_503, timeout=2, interval=0.02)
        assert answer.body.startswith("n2: draining (agent stopping, exit in 3 s)"), answer
        answers: list[Answer] = []
        while agent.process.poll() is None and time.monotonic() - sent < 10:
            answers.append(agent.get(timeout=1))
            time.sleep(0.1)
        exited = time.monotonic() - sent
        served = [a for a in answers if a.status]
        assert all(a.status == 503 and "draining" in a.body for a in served), served[-1]
        assert time.monotonic() - sent >= 2.5 and served, "stopped serving before the drain ended"
        assert agent.process.wait(timeout=5) == 0
        assert 2.5 <= exited <= 3 + SLACK, exited
    finally:
        agent.stop()


def test_sighup_and_file_change_reload_keep_verdicts_and_reject_bad_config(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    n1, n2 = synced_cluster.node("n1"), synced_cluster.node("n2")
    config = tmp_path / "agent.toml"
    config.write_text(f'[nodes]\nn1 = "{n1.address()}"\n')
    agent = AgentProcess(
        [],
        synced_cluster.monitor_user,
        synced_cluster.password_file,
        [*TIMING, "--config", str(config)],
    )
    try:
        agent.wait_for(is_200, timeout=15)
        since = agent.status()["nodes"]["n1"]["since"]
        unchanged = config.stat()
        config.write_text(f'[nodes]\nn1 = "{n1.address()}"\nn2 = "{n2.address()}"\n')
        # keep the old mtime, so that only the SIGHUP can make the agent read the file again
        os.utime(config, ns=(unchanged.st_atime_ns, unchanged.st_mtime_ns))
        # not read again by itself: wait for a poll that started after the write (the
        # housekeeping job, which watches the file's mtime, runs four times as often)
        written = time.time()
        deadline = time.monotonic() + 30
        while agent.status()["nodes"]["n1"]["checked_at"] <= written:
            assert time.monotonic() < deadline, agent.output()
            time.sleep(0.05)
        assert agent.get().body == "n1: synced\n"
        os.kill(agent.pid, signal.SIGHUP)
        agent.wait_for(lambda a: a.body == "n1: synced; n2: synced\n", timeout=10)
        document = agent.status()
        assert document["nodes"]["n1"]["since"] == since  # n1's verdict was not dropped
        # an invalid file is rejected and the running configuration kept (no SIGHUP needed:
        # a changed file is noticed by itself)
        config.write_text(f'interval = -1\n[nodes]\nn1 = "{n1.address()}"\n')
        deadline = time.monotonic() + 10
        while "config reload rejected" not in agent.output():
            assert time.monotonic() < deadline, agent.output()
            time.sleep(0.1)
        assert "interval (from config file" in agent.output()
        assert agent.get().body == "n1: synced; n2: synced\n"
        # and a valid change by file alone: n2 goes away
        config.write_text(f'[nodes]\nn1 = "{n1.address()}"\n')
        agent.wait_for(lambda a: a.body == "n1: synced\n", timeout=10)
        assert agent.get("/health/n2").status == 404
    finally:
        agent.stop()


def test_rotated_password_is_read_at_the_next_reconnect(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    node = synced_cluster.node("n1")
    user = "rotating_monitor"
    password_file = tmp_path / "password"
    password_file.write_text("first-pw\n")
    node.sql(
        f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY 'first-pw'; "
        f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY 'first-pw'"
    )
    agent = AgentProcess([f"n1={node.address()}"], user, str(password_file), TIMING)
    try:
        agent.wait_for(is_200, timeout=15)
        # rotate: server first, then the file, then cut the agent's session
        node.sql(f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY 'second-pw'")
        password_file.write_text("second-pw\n")
        sessions = f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER='{user}'"
        before = node.sql(sessions)
        assert len(before) == 1
        node.sql(f"KILL CONNECTION {before[0][0]}")
        deadline = time.monotonic() + 30
        while (after := node.sql(sessions)) in ([], before):
            assert time.monotonic() < deadline, agent.output()
            time.sleep(0.1)
        assert len(after) == 1  # a new session, logged in with second-pw
        agent.wait_for(is_200, timeout=5)
        assert "access_denied" not in agent.output()
    finally:
        agent.stop()
        node.sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")


def test_kill_sessions_after_maintenance(admin: GaleraTestbed, tmp_path: Path) -> None:
    node = admin.node("n2")
    user = "killing_monitor"
    password_file = tmp_path / "password"
    password_file.write_text("killer-pw")
    node.sql(
        f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY 'killer-pw'; "
        f"GRANT PROCESS, CONNECTION ADMIN ON *.* TO '{user}'@'127.0.0.1'"
    )
    app_session = connect_admin(admin, "n2")
    agent = AgentProcess(
        [f"n2={node.address()}"],
        user,
        str(password_file),
        [*TIMING, "--state-dir", str(tmp_path), "--kill-sessions", "--kill-sessions-after", "1"],
    )
    try:
        agent.wait_for(is_200, timeout=15)
        cursor = app_session.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
        (tmp_path / "maintenance").write_text("drain for the test")
        agent.wait_for(is_503, timeout=3)
        deadline = time.monotonic() + 10
        while "killed" not in agent.output():
            assert time.monotonic() < deadline, agent.output()
            time.sleep(0.2)
        assert "n2: killed 1 client session(s)" in agent.output(), agent.output()
        with pytest.raises(mysql.connector.Error):
            cursor.execute("SELECT 1")
            cursor.fetchall()
        (tmp_path / "maintenance").unlink()
        agent.wait_for(is_200, timeout=5)
    finally:
        agent.stop()
        app_session.close()
        node.sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")

"""Closing the old writer's sessions (writer_users), through a real HAProxy with pooled,
long-lived client connections: HAProxy in TCP mode keeps established connections to a server
whose check fails, so without the kill a pool goes on writing to the old writer.

Bounds: after the writer moves (maintenance of the writer), no transaction commits on the old
writer later than writer_kill_grace + 1 s after its /writer stopped answering 200, and no
hot-row conflict (1213) comes after that either. Without PROCESS / CONNECTION ADMIN the agent
says so in /status, /metrics and one log line, never "killed 0".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from galera_health.sessions_sql import kill_sessions, missing_privileges
from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess, stop_all
from testkit.haproxy import Backend, HAProxy, Listener, free_port
from testkit.workload import Pool, PoolResult, prepare_hot

from .conftest import WRITER_GRANTS, restore

KILLER = "gh_killer"  # the writer account with what the kill needs (the chart's grants)
KILL_GRANT = "PROCESS, CONNECTION ADMIN ON *.*"
CLIENT = ("pool_app", "pool-app-pw-7c2")
GRACE = 2.0  # HAProxy here: inter 1 s fall 1, so it has moved new connections within ~1.5 s


class Bed:
    """One agent per node (--writer, writer_users = the pool's account), HAProxy's write rule
    on /writer over the three nodes."""

    def __init__(self, cluster: GaleraTestbed) -> None:
        self.cluster = cluster
        self.base = Path(tempfile.mkdtemp(prefix="galera-health-kill-"))
        self.agents: dict[str, AgentProcess] = {}
        for node in cluster.nodes:
            (self.base / node.name).mkdir()
            self.agents[node.name] = self.start_agent(node.name)
        backends = [
            Backend(n.name, n.host, n.port, agent_port=self.agents[n.name].port)
            for n in cluster.nodes
        ]
        self.lb = HAProxy([Listener("lb_writer", "writer", free_port(), backends)])

    def start_agent(self, name: str) -> AgentProcess:
        node, cluster, state = self.cluster.node(name), self.cluster, self.base / name
        return AgentProcess(
            [f"{node.name}={node.address()}"],
            cluster.monitor_user,
            cluster.password_file,
            [
                "--writer",
                "--writer-user",
                KILLER,
                "--writer-password-file",
                cluster.password_file,
                "--writer-users",
                CLIENT[0],
                "--writer-kill-grace",
                f"{GRACE:g}",
                "--state-dir",
                str(state),
            ],
        )

    def writer(self, timeout: float = 30.0, other_than: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [n for n, a in self.agents.items() if a.get("/writer", 1.0).status == 200]
            if len(found) == 1 and found[0] != other_than:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no single writer (other than {other_than}) within {timeout} s")

    def stop(self) -> None:
        self.lb.stop()
        stop_all(self.agents.values())


@pytest.fixture(scope="module")
def bed(cluster: GaleraTestbed) -> Iterator[Bed]:
    restore(cluster)
    cluster.create_account(KILLER, (*WRITER_GRANTS, KILL_GRANT))
    prepare_hot(cluster.nodes[0].sql, *CLIENT, rows=3)
    for node in cluster.nodes:  # the account and the rows replicate before a client lands there
        deadline = time.monotonic() + 60
        check = f"SELECT COUNT(*) FROM mysql.global_priv WHERE User='{CLIENT[0]}'"
        while (
            node.sql(check)[0][0] != "1"
            or node.sql("SELECT COUNT(*) FROM pool_hot.hot")[0][0] != "3"
        ):
            assert time.monotonic() < deadline, (
                f"the pool's account or rows never reached {node.name}"
            )
            time.sleep(0.1)
    running = Bed(cluster)
    try:
        running.lb.start()
        running.lb.wait(
            # routed: "UP", and "UP 1/2" (a first failed check with fall 2: still routed)
            lambda states: [s.status for s in states.values() if s.status.startswith("UP")]
            == ["UP"],
            60,
            "one server routed (UP) in lb_writer",
        )
        yield running
    finally:
        running.stop()
        restore(cluster)


def after(results: list[PoolResult], moment: float) -> list[PoolResult]:
    return [r for r in results if r.ended > moment]


def test_pooled_clients_leave_the_old_writer_within_the_grace(bed: Bed) -> None:
    old = bed.writer()
    marker = bed.base / old / "maintenance"
    port = bed.lb.port("lb_writer")
    pool = Pool("127.0.0.1", port, *CLIENT, workers=4, rows=3).start()
    # clients that reconnect often follow HAProxy to the new writer at once: until the kill,
    # they conflict with the pool's on the hot rows
    churn = Pool("127.0.0.1", port, *CLIENT, workers=2, rows=3, recycle=5).start()
    try:
        pool.wait_committed(20)
        assert {r.node for r in pool.results() if r.ok} == {old}
        injected = time.monotonic()
        marker.write_text("")
        while bed.agents[old].get("/writer", 1.0).status == 200:
            assert time.monotonic() < injected + 10, f"{old} kept /writer 200 in maintenance"
            time.sleep(0.02)
        moved = time.monotonic()
        new = bed.writer(other_than=old)
        bound = moved + GRACE + 1.0
        # the pool carries on: past the bound, until it has committed on the new writer
        while time.monotonic() < bound + 2.0 or not any(
            r.node == new for r in after(pool.results(), bound)
        ):
            assert time.monotonic() < bound + 30, "the pool never committed on the new writer"
            time.sleep(0.1)
    finally:
        results = pool.stop() + churn.stop()
        marker.unlink(missing_ok=True)
    late = [r for r in after(results, bound) if r.ok and r.node == old]
    assert not late, f"{len(late)} commits on the old writer {old} after grace + 1 s"
    conflicts = [r for r in after(results, bound) if r.error == "1213"]
    assert not conflicts, f"{len(conflicts)} hot-row conflicts after grace + 1 s"
    on_old = [r for r in results if r.ok and r.node == old and r.ended > moved]
    assert on_old, "no commit on the old writer after the move: the test proves nothing"
    metrics = bed.agents[old].get("/metrics").body
    killed = [
        line
        for line in metrics.splitlines()
        if line.startswith(f'galera_health_writer_sessions_killed_total{{node="{old}"}}')
    ]
    assert killed and float(killed[0].split()[-1]) >= 1, killed
    assert "writer sessions: killed" in bed.agents[old].output()
    sessions = bed.agents[old].status()["nodes"][old]["writer"]["sessions"]
    assert sessions["problem"] is None and sessions["killed_total"] >= 1
    deadline = time.monotonic() + 60
    while bed.agents[old].get("/health", 1.0).status != 200:
        assert time.monotonic() < deadline, f"{old} never came back from maintenance"
        time.sleep(0.1)


def test_an_agent_started_beside_a_standby_closes_the_sessions_left_there(bed: Bed) -> None:
    """A node that rejoined (or whose agent restarted) as a standby while clients still sit on
    it: the first judged /writer answer is 503, and the grace later their sessions are killed.
    Runs last on the bed: the restarted agent has a new port that HAProxy does not check."""
    writer = bed.writer()
    name = next(n for n in bed.agents if n != writer)
    node = bed.cluster.node(name)
    bed.agents[name].stop()
    clients = [
        mysql.connector.connect(
            host="127.0.0.1", port=node.port, user=CLIENT[0], password=CLIENT[1],
            connection_timeout=5, read_timeout=5,
        )
        for _ in range(2)
    ]  # fmt: skip
    try:
        started = time.monotonic()
        bed.agents[name] = bed.start_agent(name)
        deadline = started + GRACE + 15
        alive = list(clients)
        while alive:
            assert time.monotonic() < deadline, f"{len(alive)} sessions still open on {name}"
            for client in list(alive):
                try:
                    cursor = client.cursor()
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
                except mysql.connector.Error:
                    alive.remove(client)
            time.sleep(0.1)
        closed = time.monotonic() - started
        assert closed >= GRACE, f"killed {closed:.1f} s after the start, before the grace"
        lines = [x for x in bed.agents[name].output().splitlines() if "writer sessions" in x]
        assert len(lines) == 1 and "killed 2 session(s)" in lines[0], lines
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()


def test_missing_privileges_are_one_line_never_killed_zero(
    cluster: GaleraTestbed, writer_account: tuple[str, str]
) -> None:
    """The lease's grants only (no PROCESS, no CONNECTION ADMIN): said at start, not at the
    first loss of the role."""
    node = cluster.nodes[0]
    user, password_file = writer_account
    agent = AgentProcess(
        [f"{node.name}={node.address()}"],
        cluster.monitor_user,
        cluster.password_file,
        [
            "--writer",
            "--writer-user",
            user,
            "--writer-password-file",
            password_file,
            "--writer-users",
            CLIENT[0],
        ],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            writer = agent.status()["nodes"][node.name].get("writer", {})
            if writer.get("sessions") is not None:
                break
            assert time.monotonic() < deadline, f"no session report in /status: {writer}"
            time.sleep(0.1)
        problem = writer["sessions"]["problem"]
        assert problem is not None and "PROCESS and CONNECTION ADMIN" in problem, problem
        assert f"GRANT {KILL_GRANT}" in problem
        assert writer["sessions"]["last_killed"] is None
        metrics = agent.get("/metrics").body
        assert f'galera_health_writer_session_kill_blocked{{node="{node.name}"}} 1.0' in metrics
        lines = [line for line in agent.output().splitlines() if "writer sessions:" in line]
        assert len(lines) == 1 and "lacks PROCESS and CONNECTION ADMIN" in lines[0], lines
        assert "killed 0" not in agent.output()
    finally:
        agent.stop()


def test_what_mariadb_asks_to_see_and_kill_other_accounts_sessions(
    cluster: GaleraTestbed, writer_account: tuple[str, str]
) -> None:
    """The facts sessions_sql.py relies on, on this MariaDB: without PROCESS another account's
    session is not in the process list (a kill would find nothing); with PROCESS alone it is,
    but KILL is refused (1095) until CONNECTION ADMIN."""
    node = cluster.nodes[0]
    cluster.create_account("gh_process_only", "PROCESS ON *.*")
    password = Path(cluster.password_file).read_text().strip()

    def connect(user: str, secret: str) -> Any:
        return mysql.connector.connect(
            host="127.0.0.1", port=node.port, user=user, password=secret, connection_timeout=5
        )

    client = connect(*CLIENT)
    try:
        cursor = client.cursor()
        cursor.execute("SELECT CONNECTION_ID()")
        (session,) = cursor.fetchone()
        seen = {}
        for user in (writer_account[0], "gh_process_only"):
            admin = connect(user, password)
            try:
                other = admin.cursor()
                other.execute(
                    f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {session}"
                )
                seen[user] = other.fetchone()[0]
                if user == "gh_process_only":
                    with pytest.raises(mysql.connector.Error) as refused:
                        other.execute(f"KILL CONNECTION {session}")
                    assert refused.value.errno == 1095, refused.value
            finally:
                admin.close()
        assert seen == {writer_account[0]: 0, "gh_process_only": 1}, seen
    finally:
        client.close()
        node.sql(
            f"DROP USER IF EXISTS 'gh_process_only'@'localhost', 'gh_process_only'@'{cluster.host}'"
        )


def test_privileges_through_a_default_role_count_a_role_not_enabled_does_not(bed: Bed) -> None:
    """A DBA who grants PROCESS and CONNECTION ADMIN through a role: the check reads what the
    server checks (SHOW GRANTS: the account's and its enabled roles'), so a default role (and a
    role granted to it) counts and the account can see and kill another's session; a role
    granted but not enabled does not count, and is reported."""
    cluster = bed.cluster
    node = cluster.nodes[0]
    password = Path(cluster.password_file).read_text().strip()
    hosts = ("localhost", cluster.host)
    statements = ["CREATE ROLE gh_kill_outer", "CREATE ROLE gh_kill_inner",
                  "GRANT PROCESS ON *.* TO gh_kill_outer",
                  "GRANT CONNECTION ADMIN ON *.* TO gh_kill_inner",
                  "GRANT gh_kill_inner TO gh_kill_outer"]  # fmt: skip
    for user in ("gh_role_default", "gh_role_off"):
        for host in hosts:
            statements += [f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'",
                           f"GRANT gh_kill_outer TO '{user}'@'{host}'"]  # fmt: skip
    statements += [f"SET DEFAULT ROLE gh_kill_outer FOR 'gh_role_default'@'{h}'" for h in hosts]
    node.sql("; ".join(statements))
    client = mysql.connector.connect(
        host="127.0.0.1", port=node.port, user=CLIENT[0], password=CLIENT[1], connection_timeout=5
    )
    try:
        found = {}
        for user in ("gh_role_default", "gh_role_off"):
            admin = mysql.connector.connect(
                host="127.0.0.1", port=node.port, user=user, password=password,
                connection_timeout=5,
            )  # fmt: skip
            try:
                cursor = admin.cursor()
                found[user] = missing_privileges(cursor, user)
                if found[user] is None:
                    killed, problem = kill_sessions(cursor, [CLIENT[0]], user)
                    assert killed >= 1 and problem is None, (killed, problem)
            finally:
                admin.close()
        assert found["gh_role_default"] is None, found
        assert "lacks PROCESS and CONNECTION ADMIN" in str(found["gh_role_off"]), found
        with pytest.raises(mysql.connector.Error):  # it was killed
            client.cursor().execute("SELECT 1")
    finally:
        with contextlib.suppress(Exception):
            client.close()
        node.sql(
            "DROP USER IF EXISTS "
            + ", ".join(f"'{u}'@'{h}'" for u in ("gh_role_default", "gh_role_off") for h in hosts)
            + "; DROP ROLE IF EXISTS gh_kill_outer; DROP ROLE IF EXISTS gh_kill_inner"
        )


def test_the_charts_every_start_script_applies_the_accounts_idempotently(
    cluster: GaleraTestbed, tmp_path: Path
) -> None:
    """Turning the writer (and writerUsers) on for a running reference cluster: the rendered
    apply-accounts.sh, which start.sh runs at every start, against a real node twice; the second
    run changes no account, grant or privilege row and reports no error."""
    from ..chart.helm import CHART, helm_or_skip

    helm = helm_or_skip()
    monitor, writer = "gh_up_monitor", "gh_up_writer"
    rendered = helm.render(
        [CHART / "ci" / "writer-values.yaml"],
        [
            f"agent.user={monitor}",
            f"agent.writerUser={writer}",
            f"agent.writerUsers={{{CLIENT[0]}}}",
        ],
    )
    data = rendered.one("ConfigMap", f"{rendered.one('StatefulSet')['metadata']['name']}-galera")[
        "data"
    ]
    (tmp_path / "accounts.sh").write_text(data["galera-health-accounts.sh"])
    (tmp_path / "apply.sh").write_text(data["apply-accounts.sh"])
    node = cluster.nodes[0]
    env = {
        "PATH": os.environ["PATH"],
        "MYSQL_UNIX_PORT": node.socket,
        "MARIADB_ROOT_PASSWORD": "",
        "GALERA_HEALTH_ACCOUNTS": str(tmp_path / "accounts.sh"),
        "GALERA_HEALTH_MONITOR_PASSWORD": "mon-pw-1",
        "GALERA_HEALTH_WRITER_ACCOUNT_PASSWORD": "wr-pw-1",
    }
    users = f"('{monitor}', '{writer}')"
    snapshot = [
        f"SELECT User, Host, Priv FROM mysql.global_priv WHERE User IN {users} ORDER BY 1, 2",
        f"SELECT * FROM mysql.db WHERE User IN {users} ORDER BY User, Host, Db",
        f"SELECT * FROM mysql.tables_priv WHERE User IN {users} ORDER BY User, Host, Table_name",
    ]

    def state() -> list[list[list[str]]]:
        return [node.sql(query) for query in snapshot]

    try:
        runs, states = [], []
        for _ in range(2):
            runs.append(
                subprocess.run(
                    ["bash", str(tmp_path / "apply.sh")],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
            )
            states.append(state())
        for run in runs:
            assert run.returncode == 0 and run.stdout.strip() == (
                "galera-health accounts: applied (CREATE USER IF NOT EXISTS, GRANT)"
            ), (run.stdout, run.stderr)
            assert run.stderr == ""
        assert states[0] == states[1]
        grants = node.sql(f"SHOW GRANTS FOR '{writer}'@'127.0.0.1'")
        assert grants[0][0].startswith("GRANT PROCESS, CONNECTION ADMIN ON *.* TO"), grants
        assert any("`galera_health`.*" in row[0] for row in grants), grants
        monitor_grants = node.sql(f"SHOW GRANTS FOR '{monitor}'@'localhost'")
        assert len(monitor_grants) == 1 and "USAGE" in monitor_grants[0][0], monitor_grants
    finally:
        node.sql(
            "DROP USER IF EXISTS "
            + ", ".join(
                f"'{u}'@'{h}'" for u in (monitor, writer) for h in ("localhost", "127.0.0.1")
            )
        )

"""The writer under real operations (issue 21): agents with different settings, a lease table of
the last release migrated in place, on the real test bed with one agent per node.

Bounds as in test_writer.py: never two 200s for more than 1 s in one event (here: none at all
in steady state), the role never moves without a fault, a fault moves it once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import mysql.connector
import pytest
from mysql.connector import errorcode

from galera_health.config import load_settings
from galera_health.lease import LeaseRow, Read
from galera_health.lease_sql import TABLE, LeaseClient
from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import AgentProcess, run_cli, stop_all

from .conftest import WRITER_GRANTS, restore
from .election import (
    EVICTION_SLACK,
    FAULT_BOUND,
    OVERLAP_BOUND,
    EvictionWatch,
    Sampler,
    figures,
)

pytestmark = pytest.mark.galera

# The lease table as the last release created it (no validity_ms), spelled out here on purpose.
OLD_TABLE = (
    f"CREATE TABLE {TABLE} ("
    "id TINYINT UNSIGNED NOT NULL PRIMARY KEY, "
    "holder VARCHAR(64) NOT NULL DEFAULT '', "
    "holder_id VARCHAR(64) NOT NULL DEFAULT '', "
    "priority INT UNSIGNED NOT NULL DEFAULT 0, "
    "epoch BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "counter BIGINT UNSIGNED NOT NULL DEFAULT 0, "
    "next_holder VARCHAR(64) NOT NULL DEFAULT '', "
    "next_holder_id VARCHAR(64) NOT NULL DEFAULT '', "
    "next_priority INT UNSIGNED NOT NULL DEFAULT 0"
    ") ENGINE=InnoDB"
)


def lease_client(cluster: GaleraTestbed, name: str, account: tuple[str, str]) -> LeaseClient:
    settings = load_settings(
        {
            "nodes": [f"{name}={cluster.node(name).address()}"],
            "user": account[0],
            "password_file": account[1],
        },
        {},
        need_listen=False,
    )
    return LeaseClient(settings.node(settings.nodes[0]))


def test_an_old_shaped_lease_table_is_migrated_in_place(
    cluster: GaleraTestbed, writer_account: tuple[str, str]
) -> None:
    """A table of the last release, held by a node: three agents' first reads at once each
    add the column (ALTER ... IF NOT EXISTS, in total order), none fails, the row is kept."""
    restore(cluster)
    first = cluster.nodes[0]
    first.sql(
        f"CREATE DATABASE IF NOT EXISTS galera_health; DROP TABLE IF EXISTS {TABLE}; {OLD_TABLE}; "
        f"INSERT INTO {TABLE} (id, holder, holder_id, epoch, counter) "
        "VALUES (1, 'n9', 'uuid-old', 7, 42)"
    )
    clients = [lease_client(cluster, node.name, writer_account) for node in cluster.nodes]
    results: list[object] = [None] * len(clients)
    go = threading.Barrier(len(clients))

    def read(index: int) -> None:
        client = clients[index]
        client.connect()
        go.wait(timeout=30)
        results[index] = client.run(Read())

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    old = LeaseRow(
        holder="n9", holder_id="uuid-old", epoch=7, counter=42, holder_member=False
    )  # not a member: a row the test wrote
    # A read that ran its ALTER while another's was in flight may time out (the 1 s lease
    # deadline) and read again at the next poll; it never reports a wrong row.
    assert all(r == old or getattr(r, "kind", "") == "timeout" for r in results), results
    assert old in results, results
    for node in cluster.nodes:
        columns = node.sql(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
            "'galera_health' AND TABLE_NAME = 'writer_lease' AND COLUMN_NAME = 'validity_ms'"
        )
        assert columns == [["validity_ms"]], (node.name, columns)
    again = lease_client(cluster, "n2", writer_account)
    try:
        assert again.run(Read()) == old  # idempotent: nothing left to migrate
    finally:
        again.close()


INTERVALS = {"n1": 4.0, "n2": 1.0, "n3": 0.25}


def writer_agent(
    cluster: GaleraTestbed, name: str, account: tuple[str, str], *extra: str
) -> AgentProcess:
    """One node's agent: health as the USAGE-only monitor, the lease as writer_user."""
    user, password_file = account
    return AgentProcess(
        [f"{name}={cluster.node(name).address()}"],
        cluster.monitor_user,
        cluster.password_file,
        ["--writer", "--writer-user", user, "--writer-password-file", password_file, *extra],
    )


@pytest.fixture
def mixed(cluster: GaleraTestbed, writer_account: tuple[str, str]) -> Iterator[Sampler]:
    """One agent per node with three different intervals, the slow one started first so it
    holds the role (the mix issue 21 measured: others at the defaults stole it)."""
    restore(cluster)
    base = Path(tempfile.mkdtemp(prefix="galera-health-mixed-"))
    agents: dict[str, AgentProcess] = {}
    sampler = Sampler(agents)
    try:
        for name, interval in INTERVALS.items():
            state_dir = base / name
            state_dir.mkdir()
            agents[name] = writer_agent(
                cluster, name, writer_account, "--interval", f"{interval:g}", "--state-dir",
                str(state_dir),
            )  # fmt: skip
            if name == "n1":
                agents[name].wait_for(lambda a: a.status == 200, "/writer", timeout=60)
        sampler.start()
        yield sampler
    finally:
        sampler.stop()
        stop_all(agents.values())
        restore(cluster)


def test_mixed_intervals_keep_the_role_and_a_fault_moves_it_once(
    cluster: GaleraTestbed, mixed: Sampler
) -> None:
    writer = mixed.current_writer(timeout=60)
    assert writer == "n1", writer
    start = time.monotonic()
    time.sleep(10.0)  # two and a half of the slow holder's periods (others stole in 3.3 s)
    steady = mixed.since(start)
    assert len(steady) >= 40, len(steady)
    wrong = [s for s in steady if s.writers != ("n1",)]
    assert not wrong, wrong[:5]
    # A fault on the slow writer: the role moves once, after Galera's eviction or the holder's
    # promise, whichever is later: its validity 5.5 s + the 0.5 s margin after its last renewal
    # (at the latest at the fault), seen up to a contender's 1 s lease period after it was
    # sent, + the same slack as after an eviction (the statement, a tick, the 100 ms sample).
    bound = 5.5 + 0.5 + 1.0 + EVICTION_SLACK
    assert bound > FAULT_BOUND
    fault = time.monotonic()
    watch = EvictionWatch(cluster, "n1", fault)
    cluster.node("n1").freeze()
    try:
        new = mixed.wait(lambda s: len(s.writers) == 1 and s.writers[0] != "n1", fault, 30)
        evicted = watch.stop()
        took = new.at - fault
        time.sleep(2.0)
    finally:
        cluster.node("n1").thaw()
    found = figures(mixed.since(fault - 0.5))
    print(
        f"\nmixed intervals {INTERVALS}: steady {len(steady)} samples, one writer; freeze of n1: "
        f"new writer {new.writers[0]} after {took:.2f} s (evicted after {evicted}), "
        f"two writers {found.overlap:.2f} s, moves {found.moves}"
    )
    if evicted is not None:
        bound = max(bound, evicted + EVICTION_SLACK)
    assert took <= bound, (took, bound)
    assert found.overlap <= OVERLAP_BOUND, found
    assert found.moves == 1, found


@pytest.fixture
def trio(cluster: GaleraTestbed, writer_account: tuple[str, str]) -> Iterator[Sampler]:
    restore(cluster)
    agents: dict[str, AgentProcess] = {}
    sampler = Sampler(agents)
    try:
        for node in cluster.nodes:
            agents[node.name] = writer_agent(cluster, node.name, writer_account)
        sampler.start()
        yield sampler
    finally:
        sampler.stop()
        stop_all(agents.values())
        restore(cluster)


def test_the_monitor_cannot_write_the_lease_and_a_foreign_write_is_reported(
    cluster: GaleraTestbed, trio: Sampler
) -> None:
    """The monitor account (USAGE only) is refused; a row written by someone else (an unknown
    holder whose counter keeps moving, as an intruder would pin the role) is reported in /status
    and the log by every agent, never gives a 200; when it stops, one agent takes over."""
    writer = trio.current_writer(timeout=60)
    node = cluster.node(writer)
    with pytest.raises(mysql.connector.Error) as refused:
        connection = mysql.connector.connect(
            host="127.0.0.1", port=node.port, user=cluster.monitor_user,
            password=cluster.monitor_password, connection_timeout=5,
        )  # fmt: skip
        try:
            connection.cursor().execute(f"UPDATE {TABLE} SET counter = counter + 1")
        finally:
            connection.close()
    assert refused.value.errno == errorcode.ER_TABLEACCESS_DENIED_ERROR, refused.value
    start = time.monotonic()
    node.sql(
        f"UPDATE {TABLE} SET holder = 'intruder', holder_id = 'not-a-member', epoch = epoch + 1, "
        "counter = counter + 1, validity_ms = 0 WHERE id = 1"
    )
    for _ in range(16):  # 8 s of counter moves
        node.sql(f"UPDATE {TABLE} SET counter = counter + 1 WHERE id = 1")
        time.sleep(0.5)
    pinned = trio.since(start + 3.5)  # the old writer's promise has run out
    stopped = time.monotonic()
    documents = {
        name: agent.status()["nodes"][name]["writer"] for name, agent in trio.agents.items()
    }
    new = trio.wait(lambda s: len(s.writers) == 1, stopped, 30)
    found = figures(trio.since(start))
    print(
        f"\nforeign writes: no writer while pinned ({len(pinned)} samples), a new writer "
        f"{new.writers[0]} {new.at - stopped:.2f} s after they stopped; two writers "
        f"{found.overlap:.2f} s; {documents[writer]['foreign_write']}"
    )
    assert pinned and all(s.writers == () for s in pinned), pinned[:5]
    for name, document in documents.items():
        assert document["holder"] == "intruder", (name, document)
        assert "not a member of the cluster" in (document["foreign_write"] or ""), document
        lines = [line for line in trio.agents[name].output().splitlines() if "not a member" in line]
        assert len(lines) == 1, trio.agents[name].output()
    assert found.overlap == 0.0, found


def test_the_charts_init_script_creates_both_accounts_on_a_real_node(
    cluster: GaleraTestbed, tmp_path: Path
) -> None:
    """The reference StatefulSet's galera-health-accounts.sh, rendered by helm and sourced by
    bash as the image does, against a real node (twice: it must be harmless the second time):
    the monitor can log in with USAGE only, the writer account runs the lease."""
    from ..chart.helm import CHART, helm_or_skip

    helm = helm_or_skip()
    rendered = helm.render(
        [CHART / "ci" / "writer-values.yaml"],
        ["agent.user=gh_chart_monitor", "agent.writerUser=gh_chart_writer"],
    )
    configmaps = [c for c in rendered.all("ConfigMap") if "galera-health-accounts.sh" in c["data"]]
    script = tmp_path / "accounts.sh"
    script.write_text(configmaps[0]["data"]["galera-health-accounts.sh"])
    node = cluster.nodes[0]
    passwords = {"monitor": "m'on\\itor", "writer": "wr\"it'er"}
    env = {
        "PATH": os.environ["PATH"],
        "GALERA_HEALTH_MONITOR_PASSWORD": passwords["monitor"],
        "GALERA_HEALTH_WRITER_ACCOUNT_PASSWORD": passwords["writer"],
    }
    client = f"mariadb --no-defaults --socket={node.socket} --user=root"
    for _ in range(2):
        subprocess.run(
            ["bash", "-c", f'docker_process_sql() {{ {client}; }}; source "$0"', str(script)],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def grants(user: str, password: str) -> list[str]:
        connection = mysql.connector.connect(
            host="127.0.0.1", port=node.port, user=user, password=password, connection_timeout=5
        )
        try:
            cursor = connection.cursor()
            cursor.execute("SHOW GRANTS")
            return [str(row[0]) for row in cursor.fetchall()]
        finally:
            connection.close()

    try:
        monitor = grants("gh_chart_monitor", passwords["monitor"])
        writer = grants("gh_chart_writer", passwords["writer"])
        assert len(monitor) == 1 and monitor[0].startswith("GRANT USAGE ON *.*"), monitor
        assert any("ON `galera_health`.*" in g for g in writer), writer
        assert any("`mysql`.`wsrep_cluster_members`" in g for g in writer), writer
        hosts = node.sql(
            "SELECT Host FROM mysql.global_priv WHERE User = 'gh_chart_writer' ORDER BY Host"
        )
        assert hosts == [["127.0.0.1"], ["localhost"]], hosts  # never '%'
        password_file = tmp_path / "writer_password"
        password_file.write_text(passwords["writer"])
        lease = lease_client(cluster, node.name, ("gh_chart_writer", str(password_file)))
        try:
            assert isinstance(lease.run(Read()), LeaseRow)
        finally:
            lease.close()
    finally:
        node.sql("DROP USER IF EXISTS " + ", ".join(
            f"'{u}'@'{h}'" for u in ("gh_chart_monitor", "gh_chart_writer")
            for h in ("localhost", "127.0.0.1")
        ))  # fmt: skip


def test_a_rejoin_with_the_writer_as_ist_donor_moves_nothing(
    cluster: GaleraTestbed, trio: Sampler
) -> None:
    """A node stops cleanly and rejoins by IST from the writer (wsrep_sst_donor): the writer
    is a Donor for a moment and keeps the role (the lease's epoch does not move: it was never
    released); no other node's /writer changes (the third agent logs no election line at all)
    and the role never moves."""
    writer = trio.current_writer(timeout=60)
    joiner, third = (n for n in ("n1", "n2", "n3") if n != writer)
    epoch = trio.agents[writer].status()["nodes"][writer]["writer"]["epoch"]
    # the third agent may learn of this holder a moment after the sampler saw it (its own line
    # for that is not part of the rejoin): wait for it, and count only its lines from then on
    deadline = time.monotonic() + 30
    while trio.agents[third].status()["nodes"][third]["writer"]["holder"] != writer:
        assert time.monotonic() < deadline, f"{third} never saw {writer} hold the lease"
        time.sleep(0.1)
    donor = cluster.node(writer)
    donor_log_start = os.path.getsize(donor.error_log)
    start_wall = datetime.now()  # the agent's log lines carry local time
    start = time.monotonic()
    cluster.node(joiner).stop()
    time.sleep(2.0)  # renewals go on: the joiner will need the write sets it missed (IST)
    cluster.node(joiner).start(options=[f"--wsrep-sst-donor={writer}"])
    restore(cluster)
    trio.wait(lambda s: s.writers == (writer,), time.monotonic(), 30)
    time.sleep(2.0)
    with open(donor.error_log, encoding="utf-8", errors="replace") as handle:
        handle.seek(donor_log_start)
        donor_lines = handle.read().splitlines()
    ist = [line for line in donor_lines if "IST sender" in line or "async IST" in line]
    donated = [line for line in donor_lines if "Donor/Desynced" in line or "DONOR" in line]
    found = figures(trio.since(start))
    third_lines = [
        line
        for line in trio.agents[third].output().splitlines()
        if "writer election" in line and logged_at(line) >= start_wall
    ]
    print(
        f"\nIST donation by the writer {writer} to {joiner}: writers {found.writers}, "
        f"moves {found.moves}, none {found.gap:.2f} s; donor lines: {donated[:2]} {ist[:1]}"
    )
    assert ist and donated, "\n".join(donor_lines[-40:])  # it really was the IST donor
    after = trio.agents[third].status()["nodes"][third]["writer"]
    assert (after["holder"], after["epoch"]) == (writer, epoch), after  # never released
    assert found.writers == [writer] and found.moves == 0, found
    assert all(s.writers in ((), (writer,)) for s in trio.since(start))
    assert not third_lines, third_lines


def logged_at(line: str) -> datetime:
    """When an agent's text log line was written ("2026-12-07 08:08:28,769 INFO ...")."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def agent_config(path: Path, port: int, node: str, address: str, **values: object) -> None:
    lines = [f'listen = "127.0.0.1:{port}"', "writer = true", "drain_seconds = 0.2"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join([*lines, "[nodes]", f'{node} = "{address}"', ""]))


def test_reloads_with_writer_replace_the_nodes_runtime_and_the_role_follows(
    cluster: GaleraTestbed, writer_account: tuple[str, str], tmp_path: Path
) -> None:
    """Agent n1 (a config file, SIGHUP) holds the role beside agent n2. Reloads: another
    writer account, interval 0.25 -> 4 s (a slower holder: n2 must now wait its promise), then
    its address moved to the unwatched n3: the first two keep the role where it is, the last
    moves it once; never two 200s."""
    from testkit.agent import ServerProcess

    restore(cluster)
    cluster.create_account("gh_writer2", WRITER_GRANTS)
    user, password_file = writer_account
    config = tmp_path / "agent.toml"
    port = free_ports(1)[0]
    base = {
        "user": cluster.monitor_user, "password_file": cluster.password_file,
        "writer_user": user, "writer_password_file": password_file, "interval": 0.25,
    }  # fmt: skip
    agent_config(config, port, "n1", cluster.node("n1").address(), **base)
    command = [sys.executable, "-m", "galera_health", "serve", "--config", str(config)]
    agents: dict[str, AgentProcess] = {}
    sampler = Sampler(agents)
    reloaded = ServerProcess(command, port, name="agent")
    try:
        reloaded.wait_for(lambda a: a.status == 200, "/writer", timeout=60)
        agents["n1"] = reloaded  # type: ignore[assignment]
        agents["n2"] = writer_agent(cluster, "n2", writer_account)
        sampler.start()
        assert sampler.current_writer(timeout=60) == "n1"

        def reload(
            wanted: Callable[[dict[str, Any]], bool], address: str, **values: object
        ) -> float:
            agent_config(config, port, "n1", address, **{**base, **values})
            at = time.monotonic()
            os.kill(reloaded.pid, signal.SIGHUP)
            deadline = at + 30
            while not wanted(reloaded.status()["agent"]):
                assert time.monotonic() < deadline, reloaded.output()
                time.sleep(0.1)
            return at

        n1 = cluster.node("n1").address()
        at = reload(lambda a: a["writer"]["user"] == "gh_writer2", n1, writer_user="gh_writer2")
        sampler.wait(lambda s: s.writers == ("n1",), time.monotonic(), 30)
        at = reload(lambda a: a["interval_seconds"] == 4.0, n1, writer_user="gh_writer2",
                    interval=4.0)  # fmt: skip
        time.sleep(10.0)  # two and a half of the slow holder's periods: n2 must not take it
        kept = figures(sampler.since(at))
        moved_at = reload(
            lambda a: a["nodes"]["n1"] == cluster.node("n3").address(),
            cluster.node("n3").address(), writer_user="gh_writer2", interval=4.0,
        )  # fmt: skip
        applied = time.monotonic()  # the old runtime is gone: its node's lease goes still
        new = sampler.wait(lambda s: len(s.writers) == 1, applied, 30)
        time.sleep(3.0)
        moved = figures(sampler.since(moved_at))
        holder = agents["n2"].status()["nodes"]["n2"]["writer"]["holder"]
        print(
            f"\nreloads with --writer: account + interval kept the role on n1 (moves "
            f"{kept.moves}, two writers {kept.overlap:.2f} s, none {kept.gap:.2f} s); address "
            f"n1 -> n3: holder {holder} (agents {moved.writers}) {new.at - moved_at:.2f} s "
            f"after, two writers {moved.overlap:.2f} s"
        )
        assert kept.writers == ["n1"] and kept.moves == 0 and kept.overlap == 0.0, kept
        assert moved.overlap == 0.0 and moved.moves <= 1, moved
        assert holder in ("n2", "n3"), holder  # the node n1, watched by nobody now, lost it
        assert new.at - moved_at <= 4.0 + 1.5 + 0.5 + 1.0 + EVICTION_SLACK, new
        assert reloaded.status()["agent"]["writer"]["user"] == "gh_writer2"
        assert "Traceback" not in reloaded.output()
    finally:
        sampler.stop()
        reloaded.stop()
        for name, agent in agents.items():
            if name != "n1":
                agent.stop()
        restore(cluster)


@pytest.fixture
def configured(
    cluster: GaleraTestbed, writer_account: tuple[str, str], tmp_path: Path
) -> Iterator[tuple[Sampler, dict[str, Path]]]:
    """One agent per node started from its own config file, as `writer handover` reads it."""
    from testkit.agent import ServerProcess

    restore(cluster)
    user, password_file = writer_account
    agents: dict[str, Any] = {}
    configs: dict[str, Path] = {}
    sampler = Sampler(agents)
    try:
        for node in cluster.nodes:
            port = free_ports(1)[0]
            state_dir = tmp_path / f"state-{node.name}"
            state_dir.mkdir()
            configs[node.name] = tmp_path / f"{node.name}.toml"
            agent_config(
                configs[node.name], port, node.name, node.address(),
                user=cluster.monitor_user, password_file=cluster.password_file,
                writer_user=user, writer_password_file=password_file, state_dir=str(state_dir),
            )  # fmt: skip
            command = [sys.executable, "-m", "galera_health", "serve", "--config"]
            agents[node.name] = ServerProcess([*command, str(configs[node.name])], port)
            agents[node.name].wait_for(lambda a: a.status in (200, 503), "/livez")
        sampler.start()
        yield sampler, configs
    finally:
        sampler.stop()
        stop_all(agents.values())
        restore(cluster)


def test_writer_handover_moves_the_role_once_to_a_usable_node_only(
    configured: tuple[Sampler, dict[str, Path]], tmp_path: Path
) -> None:
    sampler, configs = configured
    old = sampler.current_writer(timeout=60)
    target, third = (n for n in ("n1", "n2", "n3") if n != old)
    start = time.monotonic()
    done = run_cli("writer", "handover", "--to", target, "--config", str(configs[target]))
    took = time.monotonic() - start
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[0].startswith(f"before: holder {old} (epoch "), done.stdout
    assert done.stdout.splitlines()[-1].startswith(f"after: holder {target} (epoch "), done.stdout
    assert sampler.agents[target].get(f"/writer/{target}").status == 200
    time.sleep(2.0)
    found = figures(sampler.since(start - 0.5))
    print(
        f"\nwriter handover {old} -> {target}: exit 0 after {took:.2f} s, no writer "
        f"{found.gap:.2f} s, two writers {found.overlap:.2f} s, moves {found.moves}"
    )
    assert found.writers == [old, target] and found.moves == 1 and found.overlap == 0.0, found

    status = run_cli("writer", "status", "--config", str(configs[old]))
    assert (status.returncode, status.stdout.split(" (")[0]) == (0, f"holder: {target}"), status

    # Not usable right now (maintenance of its agent): refused, the role stays.
    (tmp_path / f"state-{third}" / "maintenance").write_text("")
    sampler.agents[third].wait_for(lambda a: a.status == 503, f"/health/{third}")
    refused = run_cli("writer", "handover", "--to", third, "--config", str(configs[third]))
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith(f"galera-health: {third} is not usable right now: "), refused
    assert len(refused.stderr.splitlines()) == 1 and refused.stdout == "", refused
    unknown = run_cli("writer", "handover", "--to", "n9", "--config", str(configs[third]))
    assert unknown.returncode == 2 and "'n9' is not in these settings' nodes" in unknown.stderr
    time.sleep(1.0)
    assert figures(sampler.since(start + took)).writers == [target]


def test_a_refused_writer_account_is_one_line_and_health_is_unaffected(
    cluster: GaleraTestbed, writer_account: tuple[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    with writer_agent(cluster, "n2", (writer_account[0], str(wrong))) as agent:
        agent.wait_for(lambda a: a.status == 200, "/health", timeout=30)
        _, answer = agent.wait_for(lambda a: "refused" in a.body, "/writer", timeout=15)
        assert answer.status == 503
        assert answer.body.startswith(
            f"n2: no lease (the writer account '{writer_account[0]}' was refused: check "
            "writer_user and its password (writer_password_file or "
            "GALERA_HEALTH_WRITER_PASSWORD)"
        ), answer.body  # then "(retrying later)" while it backs off
        time.sleep(2.5)  # several lease polls: still one line, /health still 200
        assert agent.get("/health").status == 200
    lines = [line for line in agent.output().splitlines() if "was refused" in line]
    assert len(lines) == 1, agent.output()
    assert "not-the-password" not in agent.output()

"""/status (against its JSON Schema), ?format=health, /metrics and JSON logs of the real agent
against the real 3-node Galera cluster, plus one node that refuses connections."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from galera_health.testbed import GaleraTestbed, free_ports
from testkit.agent import AgentProcess, Answer

from ..schema import validate_health, validate_status

pytestmark = pytest.mark.galera

TIMING = ["--interval", "0.5", "--connect-timeout", "2", "--read-timeout", "2"]


def metrics(agent: AgentProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = agent.get("/metrics")
    assert answer.status == 200, answer
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.body)
        for s in family.samples
    }


def log_lines(agent: AgentProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in agent.output().splitlines() if line.startswith("{")]


def full_cluster(answer: Answer) -> bool:
    if answer.status != 200:
        return False
    nodes = json.loads(answer.body)["nodes"]
    return all(
        nodes[n]["healthy"] and nodes[n]["facts"].get("wsrep_cluster_size") == "3"
        for n in ("n1", "n2", "n3")
    )


def test_status_metrics_and_json_logs(synced_cluster: GaleraTestbed) -> None:
    ghost_port = free_ports(1)[0]  # nothing listens: connection refused
    nodes = [f"{n}={synced_cluster.node(n).address()}" for n in ("n1", "n2", "n3")]
    nodes.append(f"ghost=127.0.0.1:{ghost_port}")
    n2 = synced_cluster.node("n2")
    with AgentProcess(
        nodes,
        synced_cluster.monitor_user,
        synced_cluster.password_file,
        [*TIMING, "--log-format", "json"],
    ) as agent:
        agent.wait_for(lambda a: a.body.startswith("ghost: unreachable"), timeout=15)
        # A node thawed by an earlier test may still be rejoining: wait for the full cluster.
        agent.wait_for(full_cluster, "/status", timeout=60, interval=0.2)

        # /status: the schema, the facts, the policy, the agent's config without secrets
        document = agent.status()
        validate_status(document)
        assert document["nodes"]["n2"]["facts"]["wsrep_cluster_size"] == "3"
        assert document["nodes"]["ghost"]["state"] == "unreachable"
        assert document["nodes"]["n1"]["policy"]["hold_down_source"] == "evs.suspect_timeout"
        assert document["agent"]["password_source"].startswith("password_file ")

        # ?format=health: one unusable node is a fail, 503, like /health
        answer = agent.get("/status?format=health")
        assert answer.status == 503
        assert answer.headers["content-type"] == "application/health+json"
        health = json.loads(answer.body)
        validate_health(health)
        assert health["checks"]["galera:n1"][0]["status"] == "pass"
        assert health["checks"]["galera:ghost"][0]["status"] == "fail"

        # a transition the metrics and the logs must show
        n2.sql("SET GLOBAL read_only = ON")
        try:
            # not just the first 503: setting read_only pauses and desyncs the node for a
            # moment (state 2, "donor"), which the agent can catch first under load
            agent.wait_for(lambda a: a.body.startswith("n2: read_only"), "/health/n2", timeout=10)
        finally:
            n2.sql("SET GLOBAL read_only = OFF")
        agent.wait_for(lambda a: a.status == 200, "/health/n2", timeout=10)

        started = time.perf_counter()
        samples = metrics(agent)
        scrape_ms = (time.perf_counter() - started) * 1000
        print(f"/metrics over HTTP with 4 nodes: {scrape_ms:.1f} ms")
        for name in ("n1", "n2", "n3"):
            node = frozenset({("node", name)})
            assert samples[("galera_health_up", node)] == 1
            assert samples[("mysql_global_status_wsrep_cluster_size", node)] == 3
            assert samples[("mysql_global_status_wsrep_local_state", node)] == 4
            assert samples[("mysql_global_status_wsrep_ready", node)] == 1
            assert ("mysql_global_status_wsrep_local_recv_queue", node) in samples
            assert samples[("galera_health_poll_duration_seconds_count", node)] >= 2
            assert 0 <= samples[("galera_health_verdict_age_seconds", node)] < 3
        ghost = frozenset({("node", "ghost")})
        assert samples[("galera_health_up", ghost)] == 0
        assert samples[("galera_health_poll_errors_total", ghost | {("kind", "unreachable")})] >= 1
        assert not [k for k in samples if k[0].startswith("mysql_") and ("node", "ghost") in k[1]]
        # synced -> read_only, or synced -> donor -> read_only (the moment above)
        into_read_only = [
            value
            for (name, labels), value in samples.items()
            if name == "galera_health_transitions_total"
            and ("node", "n2") in labels
            and ("to", "read_only") in labels
        ]
        assert sum(into_read_only) == 1, into_read_only
        build = [dict(k[1]) for k in samples if k[0] == "galera_health_build_info"]
        assert build and build[0]["driver_mode"] == "pure"

        assert synced_cluster.monitor_password not in agent.get("/status").body
        assert synced_cluster.monitor_password not in agent.get("/metrics").body

    # JSON logs: a startup line with the effective config, one line per transition with fields
    lines = log_lines(agent)
    assert len(lines) == len(agent.output().splitlines()), agent.output()
    start = next(line for line in lines if line.get("event") == "start")
    assert start["config"]["user"] == synced_cluster.monitor_user
    assert set(start["config"]["nodes"]) == {"n1", "n2", "n3", "ghost"}
    transitions = [line for line in lines if line.get("transition")]
    moves = [(t["node"], t["from"], t["to"]) for t in transitions]
    assert ("n2", "read_only", "synced") in moves
    assert [m for m in moves if m[0] == "n2" and m[2] == "read_only"], moves
    assert moves.count(("ghost", "starting", "unreachable")) == 1  # refused again: no new line
    read_only = next(t for t in transitions if t["to"] == "read_only")
    assert read_only["reason"] == "read_only (read_only=ON)" and read_only["level"] == "warning"
    assert synced_cluster.monitor_password not in agent.output()

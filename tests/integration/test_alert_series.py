"""The series in tests/promtool/alerts_test.yml are the ones the real agent exports: every
metric name and label set used there appears in a scrape of an agent watching the real cluster,
with n2 in maintenance and a node that never answers (as a frozen one: a timeout every poll and
no facts, so no mysql_* series)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from galera_health.testbed import GaleraTestbed
from testkit.agent import AgentProcess
from testkit.fault_servers import SilentServer

from .helpers import TIMING

pytestmark = pytest.mark.galera

RULE_TESTS = Path(__file__).resolve().parents[1] / "promtool" / "alerts_test.yml"
SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="[^"]*"')
PROMETHEUS_LABELS = {"job", "instance"}  # added by the scrape, not by the agent


def series_in_rule_tests() -> dict[str, set[frozenset[str]]]:
    document: dict[str, Any] = yaml.safe_load(RULE_TESTS.read_text())
    used: dict[str, set[frozenset[str]]] = {}
    for group in document["tests"]:
        for entry in group["input_series"]:
            match = SERIES.match(entry["series"])
            assert match, entry
            name, labels = match.group(1), frozenset(LABEL.findall(match.group(2)))
            if name != "up":  # Prometheus' own series of the scrape
                used.setdefault(name, set()).add(labels - PROMETHEUS_LABELS)
    return used


def test_rule_test_series_are_what_the_agent_exports(
    synced_cluster: GaleraTestbed, tmp_path: Path
) -> None:
    (tmp_path / "maintenance.n2").write_text("kernel upgrade")
    nodes = [f"{n}={synced_cluster.node(n).address()}" for n in ("n1", "n2", "n3")]
    with SilentServer() as silent:
        nodes.append(f"frozen=127.0.0.1:{silent.port}")
        with AgentProcess(
            nodes,
            synced_cluster.monitor_user,
            synced_cluster.password_file,
            # --writer for galera_health_writer (the monitor user has no grant on
            # galera_health: /writer is 503 "no lease", the series is there all the same)
            [*TIMING, "--state-dir", str(tmp_path), "--writer"],
        ) as agent:
            agent.wait_for(lambda a: "frozen: timeout" in a.body, timeout=30)
            agent.wait_for(lambda a: a.body.startswith("n2: maintenance"), "/health/n2")
            agent.wait_for(lambda a: a.status == 200, "/health/n1")
            scrape = agent.get("/metrics")
    assert scrape.status == 200, scrape
    exported: dict[str, set[frozenset[str]]] = {}
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(scrape.body):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).add(frozenset(sample.labels))
            if "node" in sample.labels and len(sample.labels) == 1:
                values[(sample.name, sample.labels["node"])] = sample.value

    for name, label_sets in series_in_rule_tests().items():
        assert name in exported, f"{name} is not exported by the agent"
        assert label_sets <= exported[name], (name, label_sets, exported[name])

    # what the rule tests assume of each kind of node
    assert values[("galera_health_up", "frozen")] == 0
    assert values[("galera_health_maintenance", "frozen")] == 0
    assert not [k for k in values if k[0].startswith("mysql_") and k[1] == "frozen"]
    assert values[("galera_health_up", "n2")] == 0
    assert values[("galera_health_maintenance", "n2")] == 1
    assert values[("mysql_global_status_wsrep_ready", "n2")] == 1  # facts kept in maintenance
    assert values[("mysql_global_status_wsrep_local_state", "n2")] == 4
    assert values[("galera_health_up", "n1")] == 1
    assert values[("mysql_global_variables_wsrep_desync", "n1")] == 0
    assert values[("mysql_global_status_wsrep_cluster_status", "n1")] == 1

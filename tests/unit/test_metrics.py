"""/metrics from a store and poll counters filled by hand: no scheduler, no MySQL."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from galera_health.metrics import status_value
from galera_health.pod_label import PodLabelState
from galera_health.sessions import KillReport
from galera_health.stats import POLL_BUCKETS, PollStats
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot, evaluate
from galera_health.web import create_app

from .fakes import SYNCED

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def put(store: VerdictStore, stats: PollStats, node: str, observation: object, now: float) -> None:
    """What NodePoller.run_once does, without the probe."""
    assert isinstance(observation, (Snapshot, ProbeError))
    verdict = evaluate(observation, Policy(), store.latest(node), node, now, 1e9 + now, 0.004)
    transition = store.publish(verdict)
    stats.record(
        verdict.poll_seconds,
        observation.kind if isinstance(observation, ProbeError) else None,
        (transition.from_state, transition.to_state) if transition else None,
    )


def scrape(store: VerdictStore, stats: Mapping[str, PollStats]) -> tuple[Samples, dict[str, str]]:
    response = create_app(store, lambda: (True, "ok"), stats=stats).test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> VerdictStore:
    return VerdictStore(["n1", "n2", "n3"], max_age=5.0, clock=clock)


@pytest.fixture
def stats() -> dict[str, PollStats]:
    return {n: PollStats() for n in ("n1", "n2", "n3")}


def test_names_types_and_values_of_a_mixed_cluster(
    store: VerdictStore, stats: dict[str, PollStats], clock: Clock
) -> None:
    info = {
        "wsrep_local_state_uuid": "aaaa-1",
        "wsrep_cluster_state_uuid": "cccc-1",
        "wsrep_provider_version": "26.4.16(r7dce5149)",
    }
    put(store, stats["n1"], "n1", Snapshot(dict(SYNCED, **info)), clock.now)
    put(store, stats["n2"], "n2", Snapshot(SYNCED), clock.now)
    split = dict(SYNCED, wsrep_cluster_status="non-Primary", wsrep_cluster_size="1")
    put(store, stats["n2"], "n2", Snapshot(split), clock.now)
    put(store, stats["n2"], "n2", ProbeError("timeout", "no answer", timed_out=True), clock.now)
    # n3: no verdict yet
    clock.now += 1.25
    samples, types = scrape(store, stats)

    assert value(samples, "galera_health_up", node="n1") == 1
    assert value(samples, "galera_health_up", node="n2") == 0
    assert value(samples, "galera_health_up", node="n3") == 0
    assert value(samples, "galera_health_verdict_age_seconds", node="n1") == 1.25
    assert ("galera_health_verdict_age_seconds", frozenset({("node", "n3")})) not in samples
    for node in ("n1", "n2", "n3"):
        assert value(samples, "galera_health_maintenance", node=node) == 0

    assert value(samples, "galera_health_poll_errors_total", node="n2", kind="timeout") == 1
    moves = [("starting", "synced"), ("synced", "non_primary"), ("non_primary", "timeout")]
    for from_state, to_state in moves:
        labels = {"node": "n2", "from": from_state, "to": to_state}
        assert value(samples, "galera_health_transitions_total", **labels) == 1
    assert value(samples, "galera_health_poll_duration_seconds_count", node="n2") == 3
    assert value(samples, "galera_health_poll_duration_seconds_sum", node="n2") == pytest.approx(
        0.012
    )
    assert value(samples, "galera_health_poll_duration_seconds_bucket", node="n2", le="0.0025") == 0
    assert value(samples, "galera_health_poll_duration_seconds_bucket", node="n2", le="0.005") == 3
    assert value(samples, "galera_health_poll_duration_seconds_bucket", node="n2", le="+Inf") == 3
    assert value(samples, "galera_health_poll_skipped_total", node="n1") == 0

    # mysqld_exporter names and value mapping, only for a node whose last poll read facts
    assert value(samples, "mysql_global_status_wsrep_local_state", node="n1") == 4
    assert value(samples, "mysql_global_status_wsrep_ready", node="n1") == 1
    assert value(samples, "mysql_global_status_wsrep_cluster_size", node="n1") == 3
    assert value(samples, "mysql_global_status_wsrep_local_recv_queue", node="n1") == 0
    assert value(samples, "mysql_global_status_wsrep_cluster_status", node="n1") == 1
    assert value(samples, "mysql_global_variables_read_only", node="n1") == 0
    assert value(samples, "mysql_galera_status_info", node="n1", **info) == 1
    assert not [key for key in samples if key[0].startswith("mysql_") and ("node", "n2") in key[1]]
    assert ("mysql_global_status_wsrep_local_state_comment", frozenset({("node", "n1")})) not in (
        samples
    )

    assert types["galera_health_poll_duration_seconds"] == "histogram"
    assert types["galera_health_poll_errors"] == "counter"
    assert types["galera_health_transitions"] == "counter"
    assert types["galera_health_up"] == "gauge"
    assert types["mysql_global_status_wsrep_local_state"] == "gauge"


def test_build_info(store: VerdictStore) -> None:
    samples, _ = scrape(store, {})
    (labels,) = [dict(k[1]) for k in samples if k[0] == "galera_health_build_info"]
    assert set(labels) == {"version", "python", "driver", "driver_mode"}
    assert labels["driver_mode"] == "pure"
    assert labels["driver"].startswith("mysql-connector-python ")


def test_stale_node_is_down_and_exports_no_facts(
    store: VerdictStore, stats: dict[str, PollStats], clock: Clock
) -> None:
    put(store, stats["n1"], "n1", Snapshot(SYNCED), clock.now)
    clock.now += 5.5
    samples, _ = scrape(store, stats)
    assert value(samples, "galera_health_up", node="n1") == 0
    assert value(samples, "galera_health_verdict_age_seconds", node="n1") == 5.5
    assert not [key for key in samples if key[0].startswith("mysql_")]


def test_each_app_has_its_own_registry(store: VerdictStore, stats: dict[str, PollStats]) -> None:
    other = VerdictStore(["x"], max_age=5.0)
    first, _ = scrape(store, stats)
    second, _ = scrape(other, {})
    assert ("galera_health_up", frozenset({("node", "n1")})) in first
    assert ("galera_health_up", frozenset({("node", "x")})) in second
    assert ("galera_health_up", frozenset({("node", "n1")})) not in second


def test_openmetrics_on_request(store: VerdictStore) -> None:
    client = create_app(store, lambda: (True, "ok")).test_client()
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_poll_stats_buckets_and_skips() -> None:
    stats = PollStats()
    for seconds in (0.0005, 0.003, 2.5, 99.0):
        stats.record(seconds, None, None)
    stats.note_skipped()
    counts = stats.counts()
    assert counts.polls == 4 and counts.skipped == 1
    assert sum(counts.buckets) == 3  # 99 s is only in +Inf
    assert counts.buckets[POLL_BUCKETS.index(0.001)] == 1
    assert counts.buckets[POLL_BUCKETS.index(3.0)] == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ON", 1.0),
        ("OFF", 0.0),
        ("Yes", 1.0),
        ("Primary", 1.0),
        ("non-Primary", 0.0),
        ("Disconnected", 0.0),
        ("4", 4.0),
        ("0.25", 0.25),
        ("NONE", None),
        ("Synced", None),
    ],
)
def test_status_value_maps_like_mysqld_exporter(raw: str, expected: float | None) -> None:
    assert status_value(raw) == expected


def test_docs_only_use_metrics_the_agent_exports(
    store: VerdictStore, stats: dict[str, PollStats], clock: Clock
) -> None:
    info = {"wsrep_local_state_uuid": "u", "wsrep_cluster_state_uuid": "c"}
    for node in store.nodes:
        put(store, stats[node], node, Snapshot(dict(SYNCED, **info)), clock.now)
    put(store, stats["n1"], "n1", ProbeError("timeout", "x", timed_out=True), clock.now)
    store.enable_writer(2.5)  # galera_health_writer exists with --writer only
    # the pod label's metrics exist with kubernetes_pod_label only
    store.publish_pod_label("n1", PodLabelState("galera-0", "db", "role", "writer", "writer"))
    store.publish_kill("n1", KillReport())  # the session kill's, with writer_users only
    samples, types = scrape(store, stats)
    exported = {name for name, _ in samples} | set(types)
    docs = Path(__file__).resolve().parents[2] / "docs"
    for document in ("prometheus-alerts.yml", "grafana-dashboard.json", "observability.md"):
        text = (docs / document).read_text()
        used = set(re.findall(r"\b(galera_health_[a-z_]+|mysql_[a-z_]+)\b", text))
        used = {n for n in used if not n.endswith("_")}  # `..._wsrep_x` shorthand in prose
        assert used, document
        assert used <= exported, (document, sorted(used - exported))
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    assert dashboard["panels"] and dashboard["uid"] == "galera-health"

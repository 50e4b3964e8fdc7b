"""/writer, /writer/<node>, the lease in /status and galera_health_writer, on an app built around
a store filled by hand (lease states as the lease job publishes them)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from galera_health import sessions
from galera_health.lease import STANDBY, UNAVAILABLE, WRITER, LeaseRow, LeaseState
from galera_health.maintenance import Maintenance
from galera_health.store import VerdictStore
from galera_health.verdict import Snapshot
from galera_health.web import create_app

from ..samples import SYNCED
from .conftest import Clock
from .test_status_json import validate_status
from .test_web import put

VALIDITY = 2.5
ROW = LeaseRow(holder="n1", holder_id="u1", epoch=3, counter=40)


def writer_store(clock: Clock, nodes: list[str]) -> VerdictStore:
    store = VerdictStore(nodes, max_age=7.0, clock=clock, healthy_max_age=3.5)
    store.enable_writer(VALIDITY)
    for node in nodes:
        put(store, node, Snapshot(SYNCED), clock.now)
    return store


def holder(clock: Clock) -> LeaseState:
    return LeaseState("n1", WRITER, row=ROW, seen_at=clock.now, holding=3, renewed_at=clock.now)


@pytest.mark.parametrize("fast", [True, False])
def test_writer_is_200_on_the_holder_only(clock: Clock, fast: bool) -> None:
    one = writer_store(clock, ["n1"])
    client = create_app(one, lambda: (True, "ok"), fast_probes=fast).test_client()
    assert client.get("/writer").text == "n1: starting (no lease read yet)\n"
    one.publish_lease(holder(clock))
    response = client.get("/writer")
    assert (response.status_code, response.text) == (200, "n1: writer (epoch 3)\n")
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head("/writer").status_code == 200
    assert client.options("/writer").status_code == 200
    assert client.get("/writer/n1").status_code == 200
    assert client.get("/writer/n9").status_code == 404
    clock.now += 2.6  # no renewal committed within the validity: fail closed
    put(one, "n1", Snapshot(SYNCED), clock.now)
    response = client.get("/writer")
    assert response.status_code == 503
    assert response.text == "n1: writer lease not renewed for 2.6 s (valid 2.5 s)\n"


def test_standby_names_the_writer_and_health_503_wins(clock: Clock) -> None:
    store = writer_store(clock, ["n2"])
    client = create_app(store, lambda: (True, "ok")).test_client()
    store.publish_lease(LeaseState("n2", STANDBY, row=ROW, seen_at=clock.now))
    response = client.get("/writer")
    assert (response.status_code, response.text) == (503, "n2: standby (writer: n1)\n")
    store.publish_lease(
        LeaseState("n2", WRITER, row=ROW, seen_at=clock.now, holding=3, renewed_at=clock.now)
    )
    assert client.get("/writer").status_code == 200
    store.set_maintenance({"n2": Maintenance(reason="disk", since=1.0, by="ops", path="/m")})
    response = client.get("/writer")
    assert response.status_code == 503 and response.text.startswith("n2: maintenance"), (
        response.text
    )
    assert client.get("/health").status_code == 503


def test_several_nodes_answer_per_node_and_writer_is_503(clock: Clock) -> None:
    store = writer_store(clock, ["n1", "n2"])
    client = create_app(store, lambda: (True, "ok")).test_client()
    store.publish_lease(holder(clock))
    store.publish_lease(LeaseState("n2", STANDBY, row=ROW, seen_at=clock.now))
    assert client.get("/writer/n1").status_code == 200
    assert client.get("/writer/n2").text == "n2: standby (writer: n1)\n"
    response = client.get("/writer")
    assert response.status_code == 503
    assert response.text == "this agent watches 2 nodes: ask /writer/<node> (writer here: n1)\n"


def test_writer_off_is_503_with_the_flag_named(clock: Clock) -> None:
    store = VerdictStore(["n1"], max_age=7.0, clock=clock)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    client = create_app(store, lambda: (True, "ok")).test_client()
    response = client.get("/writer")
    assert response.status_code == 503
    assert response.text == "n1: writer election is off (start the agent with --writer)\n"
    assert "galera_health_writer" not in client.get("/metrics").text
    assert "writer" not in client.get("/status").json["nodes"]["n1"]


def test_status_and_metrics_show_the_lease(clock: Clock) -> None:
    store = writer_store(clock, ["n1", "n2"])
    client = create_app(store, lambda: (True, "ok")).test_client()
    store.publish_lease(holder(clock))
    store.publish_lease(
        LeaseState("n2", UNAVAILABLE, detail="the node cannot commit", row=ROW, seen_at=90.0)
    )
    clock.now += 0.4
    document = client.get("/status").json
    validate_status(document)
    assert document["nodes"]["n1"]["writer"] == {
        "writer": True,
        "reason": "writer (epoch 3)",
        "role": "writer",
        "holder": "n1",
        "epoch": 3,
        "counter": 40,
        "age_seconds": 0.4,
        "requested_by": None,
        "foreign_write": None,
    }
    assert document["nodes"]["n2"]["writer"]["reason"] == "no lease (the node cannot commit)"
    assert document["nodes"]["n2"]["writer"]["age_seconds"] == 10.4
    metrics = client.get("/metrics").text
    assert 'galera_health_writer{node="n1"} 1.0' in metrics
    assert 'galera_health_writer{node="n2"} 0.0' in metrics


def test_writer_probes_need_no_status_token(clock: Clock) -> None:
    store = writer_store(clock, ["n1"])
    store.publish_lease(holder(clock))
    client: FlaskClient = create_app(
        store, lambda: (True, "ok"), status_token="t0ken", fast_probes=False
    ).test_client()
    assert client.get("/writer").status_code == 200
    assert client.get("/writer/n1").status_code == 200
    assert client.get("/status").status_code == 401


def test_status_and_metrics_show_the_session_kills(clock: Clock) -> None:
    """writer_users: what the lease job's session kill published, in /status (schema) and
    /metrics; a node without a report shows none."""
    store = writer_store(clock, ["n1", "n2"])
    client = create_app(store, lambda: (True, "ok")).test_client()
    store.publish_lease(holder(clock))
    problem = "the writer account 'w' lacks PROCESS, ...: GRANT PROCESS, CONNECTION ADMIN ..."
    store.publish_kill("n2", sessions.reported(sessions.KillReport(), 0, problem, 1e9))
    store.publish_kill("n1", sessions.reported(sessions.KillReport(), 3, None, 1e9))
    document = client.get("/status").json
    validate_status(document)
    assert document["nodes"]["n1"]["writer"]["sessions"] == {
        "killed_total": 3,
        "last_killed": 3,
        "last_at": "2001-09-09T01:46:40+00:00",
        "problem": None,
    }
    assert document["nodes"]["n2"]["writer"]["sessions"]["problem"] == problem
    metrics = client.get("/metrics").text
    assert 'galera_health_writer_sessions_killed_total{node="n1"} 3.0' in metrics
    assert 'galera_health_writer_session_kill_blocked{node="n2"} 1.0' in metrics
    assert 'galera_health_writer_session_kill_failures_total{node="n2"} 1.0' in metrics

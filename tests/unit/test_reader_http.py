"""/reader and /reader/<node>: 200 on a usable node that is not the writer, for a read rule that
keeps reads off the write node; a store filled by hand, as the poll and lease jobs fill it."""

from __future__ import annotations

import pytest

from galera_health.lease import STANDBY, UNAVAILABLE, LeaseState
from galera_health.maintenance import Maintenance
from galera_health.store import VerdictStore
from galera_health.verdict import ProbeError, Snapshot
from galera_health.web import create_app

from ..samples import SYNCED
from .conftest import Clock
from .test_web import put
from .test_writer_http import ROW, holder, writer_store


@pytest.mark.parametrize("fast", [True, False])
def test_reader_is_503_on_the_writer_and_200_on_a_usable_standby(clock: Clock, fast: bool) -> None:
    store = writer_store(clock, ["n1", "n2"])
    client = create_app(store, lambda: (True, "ok"), fast_probes=fast).test_client()
    store.publish_lease(holder(clock))
    store.publish_lease(LeaseState("n2", STANDBY, row=ROW, seen_at=clock.now))
    response = client.get("/reader/n1")
    assert (response.status_code, response.text) == (
        503,
        "n1: writer (epoch 3); reads go to the other nodes\n",
    )
    response = client.get("/reader/n2")
    assert (response.status_code, response.text) == (200, "n2: reader; standby (writer: n1)\n")
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head("/reader/n2").status_code == 200
    options = client.options("/reader/n2")
    assert options.status_code == 200 and options.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert client.get("/reader/n9").status_code == 404
    assert client.post("/reader/n2").status_code == 405
    response = client.get("/reader")
    assert (response.status_code, response.text) == (
        503,
        "this agent watches 2 nodes: ask /reader/<node>\n",
    )


def test_an_unusable_node_is_no_reader_and_a_lapsed_writer_is_one(clock: Clock) -> None:
    store = writer_store(clock, ["n1"])
    client = create_app(store, lambda: (True, "ok")).test_client()
    store.publish_lease(holder(clock))
    assert client.get("/reader").status_code == 503
    # the lease not renewed in time: /writer 503, so the node takes reads again
    clock.now += 2.6
    put(store, "n1", Snapshot(SYNCED), clock.now)
    response = client.get("/reader")
    assert response.status_code == 200, response.text
    assert response.text == "n1: reader; writer lease not renewed for 2.6 s (valid 2.5 s)\n"
    # a lease statement failing says nothing about reads: usable, not the writer
    store.publish_lease(LeaseState("n1", UNAVAILABLE, detail="no grant", row=ROW))
    assert client.get("/reader").status_code == 200
    # /health 503 wins, with its own reason
    store.set_maintenance({"n1": Maintenance(reason="disk", since=1.0, by="ops", path="/m")})
    response = client.get("/reader")
    assert response.status_code == 503 and response.text.startswith("n1: maintenance")
    store.set_maintenance({})
    put(store, "n1", ProbeError("timeout", "read timed out after 2 s"), clock.now)
    assert client.get("/reader").status_code == 503


def test_reader_without_the_election_is_503_with_the_flag_named(clock: Clock) -> None:
    store = VerdictStore(["n1"], max_age=7.0, clock=clock)
    put(store, "n1", Snapshot(SYNCED), clock.now)
    client = create_app(store, lambda: (True, "ok")).test_client()
    response = client.get("/reader")
    assert response.status_code == 503
    assert response.text == "n1: reader needs the writer election (start the agent with --writer)\n"


def test_reader_needs_no_status_token(clock: Clock) -> None:
    store = writer_store(clock, ["n1"])
    client = create_app(
        store, lambda: (True, "ok"), status_token="t0ken", fast_probes=False
    ).test_client()
    store.publish_lease(LeaseState("n1", STANDBY, row=ROW, seen_at=clock.now))
    assert client.get("/reader").status_code == 200
    assert client.get("/reader/n1").status_code == 200
    assert client.get("/status").status_code == 401

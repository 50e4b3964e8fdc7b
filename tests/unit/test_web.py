"""The HTTP contract, on an app built around a store filled by hand (no scheduler, no MySQL)."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from galera_health.maintenance import Maintenance
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot, evaluate
from galera_health.web import create_app, wants_html

from ..samples import SYNCED
from .conftest import Clock


@pytest.fixture
def store(clock: Clock) -> VerdictStore:
    return VerdictStore(["n1", "n2"], max_age=5.0, clock=clock)


@pytest.fixture
def client(store: VerdictStore) -> FlaskClient:
    return create_app(store, lambda: (True, "ok")).test_client()


def put(store: VerdictStore, node: str, observation: Snapshot | ProbeError, now: float) -> None:
    verdict = evaluate(observation, Policy(), store.latest(node), node, now, 1e9 + now, 0.004)
    store.publish(verdict)


def test_starting_is_503(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 503
    assert response.text == "n1: starting (no verdict yet); n2: starting (no verdict yet)\n"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert int(response.headers["Content-Length"]) == len(response.data)


def test_all_synced_is_200_and_one_bad_node_is_503(
    client: FlaskClient, store: VerdictStore, clock: Clock
) -> None:
    put(store, "n1", Snapshot(SYNCED), clock.now)
    put(store, "n2", Snapshot(SYNCED), clock.now)
    assert client.get("/health").status_code == 200
    assert client.get("/readyz").text == "n1: synced; n2: synced\n"
    put(store, "n2", Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")), clock.now)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.text == "n2: non_primary (wsrep_cluster_status=non-Primary)\n"
    assert client.get("/health/n1").status_code == 200
    assert client.get("/health/n2").status_code == 503
    head = client.head("/health/n2")
    assert head.status_code == 503 and head.data == b""


def test_stale_verdict_fails_closed(client: FlaskClient, store: VerdictStore, clock: Clock) -> None:
    put(store, "n1", Snapshot(SYNCED), clock.now)
    assert client.get("/health/n1").status_code == 200
    clock.now += 5.01
    response = client.get("/health/n1")
    assert response.status_code == 503
    assert response.text.startswith(
        "n1: stale (last verdict 5.0 s old, healthy_max_age 5 s; it said synced)"
    )


def test_healthy_verdict_expires_sooner_than_an_unhealthy_one(clock: Clock) -> None:
    """A late poller must not stretch a 200 past the detection bound (healthy_max_age), while a
    503 verdict keeps its own reason until max_age (it cannot become a wrong 200 anyway)."""
    store = VerdictStore(["n1", "n2"], max_age=7.0, clock=clock, healthy_max_age=3.5)
    client = create_app(store, lambda: (True, "ok")).test_client()
    put(store, "n1", Snapshot(SYNCED), clock.now)
    put(store, "n2", Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")), clock.now)
    clock.now += 3.4
    assert client.get("/health/n1").status_code == 200
    clock.now += 0.2
    response = client.get("/health/n1")
    assert response.status_code == 503
    assert response.text == (
        "n1: stale (last verdict 3.6 s old, healthy_max_age 3.5 s; it said synced)\n"
    )
    assert client.get("/health/n2").text.startswith("n2: non_primary")
    clock.now += 3.5
    assert client.get("/health/n2").text.startswith(
        "n2: stale (last verdict 7.1 s old, max_age 7 s"
    )


def test_healthy_verdict_ages_from_the_start_of_its_poll(clock: Clock) -> None:
    """A poll that read a synced node and published 1 s later (a descheduled poller thread)
    vouches for 3.5 s from when it read, not from when it published."""
    store = VerdictStore(["n1"], max_age=7.0, clock=clock, healthy_max_age=3.5)
    client = create_app(store, lambda: (True, "ok")).test_client()
    verdict = evaluate(Snapshot(SYNCED), Policy(), None, "n1", clock.now, 1e9 + clock.now, 1.0)
    store.publish(verdict)
    clock.now += 2.4
    assert client.get("/health").status_code == 200
    clock.now += 0.2
    response = client.get("/health")
    assert response.status_code == 503
    assert response.text.startswith("n1: stale (last verdict 3.6 s old, healthy_max_age 3.5 s")


def test_unknown_node_and_path_and_method(client: FlaskClient) -> None:
    response = client.get("/health/nope")
    assert response.status_code == 404 and "known: n1, n2" in response.text
    assert client.get("/nothing").status_code == 404
    response = client.post("/health")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    assert response.text == "method not allowed; use GET, HEAD or OPTIONS\n"


def test_livez_reports_the_agent_not_the_database(store: VerdictStore) -> None:
    alive = create_app(store, lambda: (True, "ok")).test_client().get("/livez")
    assert (alive.status_code, alive.text) == (200, "ok\n")
    stuck = create_app(store, lambda: (False, "poller stuck: n1 poll running for 99 s"))
    assert stuck.test_client().get("/livez").status_code == 503


def test_status_document(client: FlaskClient, store: VerdictStore, clock: Clock) -> None:
    put(store, "n1", Snapshot(SYNCED), clock.now)
    put(store, "n2", ProbeError("access_denied", "the agent's login was refused"), clock.now)
    clock.now += 1.5
    document = client.get("/status").get_json()
    assert document["healthy"] is False
    n1, n2 = document["nodes"]["n1"], document["nodes"]["n2"]
    assert (n1["healthy"], n1["state"], n1["age_seconds"], n1["fault"]) == (
        True,
        "synced",
        1.5,
        None,
    )
    assert n1["facts"]["wsrep_cluster_status"] == "Primary"
    assert n1["poll_ms"] == 4.0
    assert n1["transitions"][0]["from"] == "starting" and n1["transitions"][0]["to"] == "synced"
    assert (n2["state"], n2["fault"]) == ("access_denied", "agent")


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def synced_store(clock: Clock) -> VerdictStore:
    store = VerdictStore(["n1", "n2"], max_age=5.0, clock=clock)
    for node in ("n1", "n2"):
        put(store, node, Snapshot(SYNCED), clock.now)
    return store


@pytest.mark.parametrize("fast", [True, False])
def test_root_is_the_health_probe(clock: Clock, fast: bool) -> None:
    """`/` answers /health's code for GET, HEAD and OPTIONS (a load balancer at its default
    path); a non-browser gets /health's text, a browser the page with the same code."""
    store = synced_store(clock)
    client = create_app(store, lambda: (True, "ok"), fast_probes=fast).test_client()
    for method in ("GET", "HEAD", "OPTIONS"):
        assert client.open("/", method=method).status_code == 200, method
    assert client.get("/").data == client.get("/health").data == b"n1: synced; n2: synced\n"
    assert client.get("/", headers={"Accept": "*/*"}).text == "n1: synced; n2: synced\n"
    page = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "Content-Security-Policy" in page.headers
    assert page.headers["Cache-Control"] == "no-store"

    put(store, "n2", Snapshot(dict(SYNCED, wsrep_cluster_status="non-Primary")), clock.now)
    for method in ("GET", "HEAD", "OPTIONS"):
        assert client.open("/", method=method).status_code == 503, method
    assert client.get("/").text == client.get("/health").text
    assert client.get("/").text.startswith("n2: non_primary")
    page = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert b"<title>galera-health</title>" in page.data
    head = client.head("/", headers={"Accept": BROWSER_ACCEPT})
    assert head.status_code == 503 and head.data == b""
    assert head.headers["Content-Length"] == str(len(page.data))
    # maintenance and a stale verdict are 503 on `/` too
    put(store, "n2", Snapshot(SYNCED), clock.now)
    store.set_maintenance({"n1": Maintenance("patching", 1.0, "ops", "/tmp/m")})
    assert client.get("/").status_code == 503
    store.set_maintenance({})
    assert client.get("/").status_code == 200
    clock.now += 6
    assert client.get("/").status_code == 503


@pytest.mark.parametrize("fast", [True, False])
def test_options_on_every_probe_path_is_the_verdict_without_a_body(
    clock: Clock, fast: bool
) -> None:
    store = synced_store(clock)
    put(store, "n2", ProbeError("timeout", "read timed out after 2 s"), clock.now)
    client = create_app(store, lambda: (True, "ok"), fast_probes=fast).test_client()
    for path in ("/health", "/readyz", "/health/n1", "/health/n2", "/livez", "/"):
        get = client.get(path)
        options = client.options(path, headers={"Accept": BROWSER_ACCEPT})
        assert options.status_code == get.status_code, path
        assert options.data == b"" and options.headers["Content-Length"] == "0", path
        assert options.headers["Allow"] == "GET, HEAD, OPTIONS", path
        assert options.headers["Cache-Control"] == "no-store", path
    assert client.options("/health/n2").status_code == 503
    assert client.options("/health/n9").status_code == 404
    # not probes: OPTIONS keeps its 405, naming what is allowed
    for path in ("/status", "/metrics"):
        answer = client.options(path)
        assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD", path
    answer = client.post("/health")
    assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert client.delete("/").headers["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("fast", [True, False])
def test_root_on_the_probe_listener_and_behind_a_token(clock: Clock, fast: bool) -> None:
    """The LB can send no token: `/` never needs one (the page holds no data; its fetch of
    /status does). On the probe-only listener `/` is the text verdict even for a browser."""
    store = synced_store(clock)
    probe_only = create_app(
        store, lambda: (True, "ok"), surface="probe", fast_probes=fast
    ).test_client()
    answer = probe_only.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert (answer.status_code, answer.text) == (200, "n1: synced; n2: synced\n")
    assert probe_only.get("/status").status_code == 404
    guarded = create_app(
        store, lambda: (True, "ok"), status_token="t0ken", fast_probes=fast
    ).test_client()
    assert guarded.get("/").status_code == 200
    assert guarded.options("/").status_code == 200
    page = guarded.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert guarded.get("/status").status_code == 401
    assert guarded.get("/metrics").status_code == 401
    put(store, "n1", Snapshot(dict(SYNCED, read_only="ON")), clock.now)
    assert guarded.get("/").status_code == 503
    assert probe_only.options("/").status_code == 503


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/json", False),
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        (BROWSER_ACCEPT, True),
        ("text/html;q=0", False),
        ("text/html;q=0.0, */*", False),
        ("text/html;q=0.5", True),
        ("text/html;q=x", False),
        ("text/htmlx", False),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    assert wants_html(accept) is html

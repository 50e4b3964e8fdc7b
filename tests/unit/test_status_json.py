"""The /status contract (docs/status.schema.json), ?format=health, and the page at GET /,
on an app built around a store filled by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from flask.testing import FlaskClient

from galera_health.lease import Role
from galera_health.pod_label import Label
from galera_health.recovery import Action
from galera_health.store import VerdictStore
from galera_health.verdict import Fault, Policy, ProbeError, Snapshot, State, evaluate
from galera_health.web import CheckStatus, create_app

from ..samples import SYNCED
from ..schema import SCHEMA_PATH, validate_health, validate_status
from .conftest import Clock


@pytest.fixture
def store(clock: Clock) -> VerdictStore:
    return VerdictStore(["n1", "n2", "n3", "n4"], max_age=5.0, clock=clock)


def describe() -> dict[str, Any]:
    return {
        "user": "health",
        "password_source": "password_file /run/secret",
        "nodes": {"n1": "h:3306"},
    }


@pytest.fixture
def client(store: VerdictStore) -> FlaskClient:
    return create_app(store, lambda: (True, "ok"), describe).test_client()


def put(
    store: VerdictStore, node: str, observation: Snapshot | ProbeError, now: float, policy: Policy
) -> None:
    verdict = evaluate(observation, policy, store.latest(node), node, now, 1e9 + now, 0.004)
    store.publish(verdict)


DEFAULT_POLICY = Policy()


def fill(store: VerdictStore, clock: Clock, policy: Policy = DEFAULT_POLICY) -> None:
    """n1 synced; n2 in hold-down after a timeout; n3 agent fault; n4 no verdict yet."""
    put(store, "n1", Snapshot(SYNCED), clock.now, policy)
    put(store, "n2", Snapshot(SYNCED), clock.now, policy)
    put(store, "n2", ProbeError("timeout", "no answer", timed_out=True), clock.now, policy)
    put(store, "n2", Snapshot(SYNCED), clock.now + 1, policy)
    put(
        store, "n3", ProbeError("access_denied", "the agent's login was refused"), clock.now, policy
    )
    clock.now += 1.5


def test_status_validates_in_every_state(
    client: FlaskClient, store: VerdictStore, clock: Clock
) -> None:
    validate_status(client.get("/status").get_json())  # all starting
    fill(store, clock)
    response = client.get("/status")
    assert response.status_code == 200  # informational: 200 whatever the verdicts
    document = response.get_json()
    validate_status(document)
    nodes = document["nodes"]
    assert [nodes[n]["state"] for n in ("n1", "n2", "n3", "n4")] == [
        "synced",
        "recovering",
        "access_denied",
        "starting",
    ]
    assert nodes["n2"]["policy"]["hold_down_pending"] is True
    assert nodes["n2"]["policy"]["hold_down_seconds"] == 10  # 2 x Galera's default PT5S
    assert nodes["n2"]["policy"]["hold_down_source"] == "evs.suspect_timeout"
    assert nodes["n2"]["transitions"][-1]["healthy"] is False
    assert nodes["n3"]["fault"] == "agent"
    assert nodes["n4"]["age_seconds"] is None and nodes["n4"]["facts"] == {}
    assert document["agent"]["user"] == "health"
    clock.now += 10  # everything stale
    validate_status(client.get("/status").get_json())


def test_the_schema_enumerates_the_words_the_types_allow() -> None:
    """Each Literal that mypy holds the code to is the enum the schema promises consumers."""
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]
    check = defs["health_json"]["properties"]["checks"]["additionalProperties"]["items"]
    pairs = [
        (defs["state"]["enum"], get_args(State)),
        (defs["node"]["properties"]["fault"]["enum"], (None, *get_args(Fault))),
        (defs["writer"]["properties"]["role"]["enum"], get_args(Role)),
        (
            defs["recovery"]["properties"]["decision"]["properties"]["action"]["enum"],
            get_args(Action),
        ),
        (check["properties"]["status"]["enum"], get_args(CheckStatus)),
        (defs["pod_label"]["properties"]["wanted"]["enum"], get_args(Label)),
        (defs["pod_label"]["properties"]["value"]["enum"], (*get_args(Label), None)),
    ]
    for listed, allowed in pairs:
        assert sorted(listed, key=str) == sorted(allowed, key=str)
    assert all(re.fullmatch(defs["state"]["pattern"], state) for state in get_args(State))


def test_existing_fields_are_kept(client: FlaskClient, store: VerdictStore, clock: Clock) -> None:
    """The contract: fields are only added within a major version."""
    fill(store, clock)
    document = client.get("/status").get_json()
    assert {"version", "driver_mode", "uptime_seconds", "max_age_seconds", "nodes", "agent"} <= set(
        document
    )
    for name in (
        "healthy",
        "state",
        "reason",
        "age_seconds",
        "checked_at",
        "poll_ms",
        "since",
        "fault",
        "facts",
        "transitions",
    ):
        assert name in document["nodes"]["n1"], name


def test_configured_hold_down_is_the_policy(store: VerdictStore, clock: Clock) -> None:
    client = create_app(
        store, lambda: (True, "ok"), policy=lambda: Policy(hold_down=3.0)
    ).test_client()
    fill(store, clock, Policy(hold_down=3.0))
    policy = client.get("/status").get_json()["nodes"]["n1"]["policy"]
    assert (policy["hold_down_seconds"], policy["hold_down_source"]) == (3.0, "config")


def test_format_health(client: FlaskClient, store: VerdictStore, clock: Clock) -> None:
    fill(store, clock)
    response = client.get("/status?format=health")
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/health+json"
    assert response.headers["Cache-Control"] == "no-store"
    document = json.loads(response.data)
    validate_health(document)
    assert document["status"] == "fail"
    checks = document["checks"]
    assert set(checks) == {"galera:n1", "galera:n2", "galera:n3", "galera:n4"}
    assert [checks[f"galera:{n}"][0]["status"] for n in ("n1", "n2", "n3", "n4")] == [
        "pass",
        "warn",
        "fail",
        "warn",
    ]
    assert "n3: access_denied" in document["output"]


def test_format_health_pass_is_200(store: VerdictStore, clock: Clock) -> None:
    two = VerdictStore(["a", "b"], max_age=5.0, clock=clock)
    client = create_app(two, lambda: (True, "ok")).test_client()
    put(two, "a", Snapshot(SYNCED), clock.now, Policy())
    put(two, "b", Snapshot(SYNCED), clock.now, Policy())
    response = client.get("/status?format=health")
    assert response.status_code == 200
    document = json.loads(response.data)
    validate_health(document)
    assert document["status"] == "pass" and "output" not in document
    assert client.get("/health").status_code == 200


def test_no_secret_in_status(store: VerdictStore, clock: Clock, tmp_path: Path) -> None:
    from galera_health.config import describe as describe_settings
    from galera_health.config import load_settings

    secret = tmp_path / "password"
    secret.write_text("s3cret-Pa55\n")
    settings = load_settings(
        {"nodes": ["n1=127.0.0.1:3306"], "user": "health", "password_file": str(secret)}, {}
    )
    client = create_app(store, lambda: (True, "ok"), lambda: describe_settings(settings))
    body = client.test_client().get("/status").text
    assert "s3cret" not in body
    document = json.loads(body)
    validate_status(document)
    assert document["agent"]["password_source"] == f"password_file {secret}"


def test_status_page_is_self_contained(client: FlaskClient) -> None:
    # no verdict yet: `/` is a probe too, so the page comes with /health's 503
    response = client.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert '<meta name="viewport"' in page
    # nothing loaded from elsewhere: no absolute URL in src/href, and a CSP that forbids it
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "@import" not in page and "url(" not in page
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    # server strings only ever reach the DOM as text
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
    assert "document.write" not in page
    head = client.head("/", headers={"Accept": "text/html"})
    assert head.status_code == 503 and head.headers["Content-Length"] == str(len(response.data))
    # the states its script colours are states the agent can report (a typo mypy cannot see)
    wait = re.search(r"var WAIT = \{(.*?)\};", page, re.DOTALL)
    assert wait is not None
    named = set(re.findall(r"(\w+): 1", wait.group(1))) | {"synced"}
    assert named and named <= set(get_args(State)), named - set(get_args(State))

"""GET /recovery on an app around a store filled by hand: the datadir facts the background job
publishes (read here from real files by datadir.read_datadir), the last poll's running/Primary,
the decision with ?force=, the schema, and the status token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from galera_health.datadir import read_datadir
from galera_health.maintenance import Maintenance
from galera_health.recovery import RECOVERED_LOG, NodeReport, decide
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot, evaluate
from galera_health.web import create_app

from ..samples import SYNCED
from ..schema import validate_recovery
from .conftest import Clock

A = "4c2c9a3e-0b1e-11ef-8b7c-6f2d2d0b0b0b"


def grastate(datadir: Path, seqno: int, safe: int = 0, uuid: str = A) -> None:
    (datadir / "mysql").mkdir(parents=True, exist_ok=True)
    (datadir / "grastate.dat").write_text(
        f"# GALERA saved state\nversion: 2.1\nuuid:    {uuid}\nseqno:   {seqno}\n"
        f"safe_to_bootstrap: {safe}\n"
    )


def test_read_datadir_from_files(tmp_path: Path) -> None:
    assert read_datadir(str(tmp_path)).empty
    grastate(tmp_path, -1)
    facts = read_datadir(str(tmp_path))
    assert not facts.empty and facts.position is None
    log = tmp_path / RECOVERED_LOG
    log.write_text(f"[Note] WSREP: Recovered position: {A}:41\n")
    assert str(read_datadir(str(tmp_path)).position) == f"{A}:41"
    # a log older than grastate.dat is from an earlier crash: not this position
    stamp = (tmp_path / "grastate.dat").stat().st_mtime
    os.utime(log, (stamp - 60, stamp - 60))
    assert read_datadir(str(tmp_path)).position is None
    missing = read_datadir(str(tmp_path / "nope"))
    assert missing.error is not None and "not a directory" in missing.error


def test_an_unreadable_datadir_is_an_error_not_empty(tmp_path: Path) -> None:
    """A file that cannot be read (here grastate.dat is a directory: an error even root gets;
    a permission error takes the same path) is an error naming the fix, never "empty"."""
    (tmp_path / "grastate.dat").mkdir()
    facts = read_datadir(str(tmp_path))
    assert not facts.empty
    assert facts.error is not None and "grastate.dat" in facts.error
    assert "read access" in facts.error


@pytest.fixture
def store(clock: Clock) -> VerdictStore:
    return VerdictStore(["n1"], max_age=5.0, clock=clock)


def test_recovery_document(tmp_path: Path, store: VerdictStore, clock: Clock) -> None:
    client = create_app(store, lambda: (True, "ok")).test_client()
    document = client.get("/recovery").get_json()
    validate_recovery(document)
    assert document["nodes"]["n1"]["error"].startswith("no datadir configured")
    assert document["decision"] is None

    grastate(tmp_path, 17, safe=1)
    store.publish_datadir("n1", str(tmp_path), read_datadir(str(tmp_path)))
    store.publish(evaluate(Snapshot(SYNCED), Policy(), None, "n1", clock.now, 1e9, 0.01))
    answer = client.get("/recovery")
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    node = answer.get_json()["nodes"]["n1"]
    validate_recovery(answer.get_json())
    assert node["position"] == f"{A}:17" and node["grastate"]["safe_to_bootstrap"] is True
    assert node["running"] is True and node["primary"] is True and node["empty"] is False

    store.publish(
        evaluate(
            ProbeError("unreachable", "refused"), Policy(), None, "n1", clock.now, 1e9, 0.01
        )
    )
    node = client.get("/recovery").get_json()["nodes"]["n1"]
    assert node["running"] is False and node["primary"] is False
    assert node["position"] == f"{A}:17"  # the files still speak while mysqld is down

    # a stale verdict says nothing about mysqld: neither running nor Primary
    store.publish(evaluate(Snapshot(SYNCED), Policy(), None, "n1", clock.now, 1e9, 0.01))
    clock.now += 60
    node = client.get("/recovery").get_json()["nodes"]["n1"]
    assert node["state"] == "stale" and node["primary"] is False


def test_decision_and_force(tmp_path: Path, store: VerdictStore) -> None:
    facts = read_datadir(str(tmp_path))
    grastate(tmp_path, 9)
    nine = read_datadir(str(tmp_path))
    reports = (NodeReport("db-0", True, facts), NodeReport("db-1", True, nine))
    store.publish_decision(decide(reports), reports)
    client = create_app(store, lambda: (True, "ok")).test_client()
    document = client.get("/recovery").get_json()
    validate_recovery(document)
    assert document["decision"]["action"] == "bootstrap"
    assert document["decision"]["node"] == "db-1"  # never the empty db-0
    stale = client.get(f"/recovery?force=db-1:{A}:8").get_json()["decision"]
    assert stale["node"] == "db-1" and "IGNORED" in stale["reason"]
    wrong = client.get(f"/recovery?force=db-0:{A}:9").get_json()["decision"]
    assert "IGNORED" in wrong["reason"] and wrong["node"] == "db-1"
    assert "forced" in client.get(f"/recovery?force=db-1:{A}:9").get_json()["decision"]["reason"]


def test_recovery_needs_the_status_token_like_status(store: VerdictStore) -> None:
    client = create_app(store, lambda: (True, "ok"), status_token="s3cret").test_client()
    assert client.get("/recovery").status_code == 401
    assert client.get("/status").status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/recovery", headers=good).status_code == 200
    # the probe-only listener does not serve it
    probe = create_app(store, lambda: (True, "ok"), surface="probe").test_client()
    assert probe.get("/recovery").status_code == 404


def test_datadir_and_recovery_peers_settings() -> None:
    from galera_health.config import ConfigError, load_settings

    base = {"nodes": ["n1=127.0.0.1:3306"], "user": "health"}
    settings = load_settings({**base, "datadir": "/var/lib/mysql"}, {})
    assert settings.datadir == "/var/lib/mysql"
    assert load_settings(base, {}).datadir is None  # off by default
    with pytest.raises(ConfigError, match="exactly one node"):
        load_settings({**base, "nodes": ["a=h:1", "b=h:2"], "datadir": "/d"}, {})
    peers = "db-0=http://10.0.0.1:9200,db-1=http://10.0.0.2:9200"
    assert load_settings({**base, "recovery_peers": peers}, {}).recovery_peers == peers
    for bad in ("db-0", "db-0=ftp://x", "db-0=http://a,db-0=http://b"):
        with pytest.raises(ConfigError, match="recovery_peers"):
            load_settings({**base, "recovery_peers": bad}, {})


def test_a_running_node_serves_no_decision(tmp_path: Path, clock: Clock) -> None:
    """A decision made while mysqld was down, starting or its verdict briefly stale (the
    recovery job asks the peers then) is never served once a fresh poll finds mysqld answering,
    though the job clears it only at its next run; it is served again while the verdict is
    stale or mysqld is down. In every answer a node shown running comes with no decision."""
    store = VerdictStore(["n1"], max_age=5.0, clock=clock)
    client = create_app(store, lambda: (True, "ok")).test_client()
    grastate(tmp_path, 9)
    reports = (NodeReport("n1", True, read_datadir(str(tmp_path))),)

    def answer() -> tuple[bool, dict[str, object] | None]:
        document = client.get("/recovery").get_json()
        validate_recovery(document)
        return document["nodes"]["n1"]["running"], document["decision"]

    store.publish_decision(decide(reports), reports)  # starting: no verdict yet
    running, decision = answer()
    assert running is False and decision is not None and decision["action"] == "bootstrap"
    store.publish(evaluate(Snapshot(SYNCED), Policy(), None, "n1", clock.now, 1e9, 0.01))
    assert answer() == (True, None)
    assert store.decision() is None
    clock.now += 60  # the verdict is stale: it says nothing about mysqld
    running, decision = answer()
    assert running is False and decision is not None
    store.publish(evaluate(Snapshot(SYNCED), Policy(), None, "n1", clock.now, 1e9, 0.01))
    assert answer() == (True, None)
    # in maintenance mysqld still runs: still no decision
    store.set_maintenance({"n1": Maintenance("test", 0.0, "tester", str(tmp_path / "n1"))})
    assert answer() == (True, None)
    store.publish(
        evaluate(
            ProbeError("unreachable", "refused"), Policy(), None, "n1", clock.now, 1e9, 0.01
        )
    )
    running, decision = answer()
    assert running is False and decision is not None

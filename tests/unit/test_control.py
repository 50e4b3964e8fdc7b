"""Reload, drain and maintenance: the agent's three ways to change course without a restart,
with scripted probes (tests/unit/fakes.py) in place of MySQL.

The same paths against real Galera nodes are in tests/integration/test_policies.py; here each
rule is pinned on its own, with a clock the test moves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from galera_health import maintenance
from galera_health.config import NodeAddress, Settings, load_settings
from galera_health.poller import NodePoller, Poller
from galera_health.store import VerdictStore
from galera_health.verdict import Policy, ProbeError, Snapshot

from .conftest import Clock
from .fakes import SYNCED, FakeProbe

WALL = 1_700_000_000.0


def settings(*nodes: str, **flags: Any) -> Settings:
    return load_settings({"nodes": list(nodes), "user": "health", **flags}, {})


class Probes:
    """A probe factory for the Poller that keeps every probe it made, by node name."""

    def __init__(self) -> None:
        self.made: dict[str, list[FakeProbe]] = {}
        self.addresses: dict[str, NodeAddress] = {}
        self.lock = threading.Lock()

    def __call__(self, address: NodeAddress, *args: Any, **kwargs: Any) -> Any:  # a NodeProbe
        probe = FakeProbe(Snapshot(SYNCED))
        with self.lock:
            self.made.setdefault(address.name, []).append(probe)
            self.addresses[address.name] = address
        return probe

    def of(self, name: str) -> list[FakeProbe]:
        with self.lock:
            return list(self.made.get(name, []))


def poll_all(poller: Poller) -> None:
    for runtime in list(poller.runtimes.values()):
        runtime.poll.run_once()


def wait_until(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    """Polls a condition (the scheduler's threads make it true), bounded generously."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g} s: {what}")
        time.sleep(0.02)


@pytest.fixture
def transitions(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    caplog.set_level(logging.INFO, logger="galera_health")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if getattr(r, "transition", False)]

    yield lines


# --- maintenance -----------------------------------------------------------------------------


def test_maintenance_files_take_nodes_out_at_once_and_bring_them_back(
    tmp_path: Path, transitions: Callable[[], list[str]]
) -> None:
    state_dir = str(tmp_path)
    probes = Probes()
    poller = Poller(
        settings("n1=h1", "n2=h2", state_dir=state_dir), VerdictStore(["n1", "n2"], 5.0), probes
    )
    poll_all(poller)
    store = poller.store
    assert [v.state for v in store.views()] == ["synced", "synced"]

    maintenance.switch(state_dir, "n2", True, "patching")
    poller.apply_maintenance()  # what housekeeping does every 0.25 s
    n1, n2 = store.views()
    assert (n1.healthy, n2.healthy, n2.state) == (True, False, "maintenance")
    assert n2.reason.startswith("maintenance (patching (set by ")
    assert n2.maintenance is not None and n2.maintenance.path == os.path.join(
        state_dir, "maintenance.n2"
    )
    assert transitions()[-1].startswith("n2: synced -> maintenance (patching")
    poll_all(poller)  # a good poll does not lift it
    poller.apply_maintenance()  # and an unchanged file is no new transition
    assert store.view("n2").state == "maintenance"
    assert len([t for t in transitions() if t.startswith("n2: synced -> maintenance")]) == 1

    maintenance.switch(state_dir, None, True, "")  # every node; n2's own file wins
    poller.apply_maintenance()
    assert store.view("n1").state == "maintenance"
    assert store.view("n1").reason.startswith("maintenance (set by ")
    assert "patching" in store.view("n2").reason

    for node in (None, "n2"):
        maintenance.switch(state_dir, node, False, "")
    poller.apply_maintenance()
    assert [(v.state, v.healthy) for v in store.views()] == [("synced", True), ("synced", True)]
    assert transitions()[-2:] == ["n1: maintenance -> synced", "n2: maintenance -> synced"]
    assert [t.to_state for t in store.transitions("n2")] == ["synced", "maintenance", "synced"]


def test_maintenance_without_a_verdict_and_an_unreadable_file_fail_closed(tmp_path: Path) -> None:
    state_dir = str(tmp_path)
    os.mkdir(os.path.join(state_dir, "maintenance.n1"))  # present, but not a readable file
    poller = Poller(settings("n1=h1", state_dir=state_dir), VerdictStore(["n1"], 5.0), Probes())
    poller.apply_maintenance()
    view = poller.store.view("n1")
    assert (view.healthy, view.state) == (False, "maintenance")
    assert "unreadable" in view.reason
    poll_all(poller)
    assert poller.store.view("n1").state == "maintenance"
    assert poller.store.transitions("n1")[0].from_state == "starting"


def test_kill_sessions_once_per_episode_after_the_delay(clock: Clock) -> None:
    store = VerdictStore(["n1"], 5.0, clock=clock, wall_clock=lambda: WALL)
    probe = FakeProbe(Snapshot(SYNCED))
    node = NodePoller("n1", probe, Policy(), store, clock=clock)  # type: ignore[arg-type]
    node.kill_sessions_after = 10.0
    node.run_once()
    record = maintenance.Maintenance("patching", WALL, "ops", "/x/maintenance.n1")
    store.set_maintenance({"n1": record})
    assert store.out_since("n1") == clock.now
    for step in (0.0, 5.0, 9.9):
        clock.now = 100.0 + step
        node.run_once()
    assert probe.killed == []  # not before kill_sessions_after
    clock.now = 110.0
    node.run_once()
    assert probe.killed == [5]
    clock.now = 200.0
    node.run_once()
    assert probe.killed == [5]  # once per episode
    store.set_maintenance({})
    assert store.out_since("n1") is None
    clock.now = 300.0
    store.set_maintenance({"n1": record})  # a new episode
    clock.now = 311.0
    node.run_once()
    assert probe.killed == [5, 7]


def test_kill_sessions_failure_is_logged_once(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="galera_health")
    store = VerdictStore(["n1"], 5.0, clock=clock)
    probe = FakeProbe(Snapshot(SYNCED))
    probe.kill_error = ProbeError("access_denied", "KILL denied")
    node = NodePoller("n1", probe, Policy(), store, clock=clock)  # type: ignore[arg-type]
    node.kill_sessions_after = 0.0
    store.start_drain("agent stopping")
    node.run_once()
    node.run_once()
    failures = [r for r in caplog.records if getattr(r, "event", None) == "kill_sessions"]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    assert "CONNECTION ADMIN" in failures[0].getMessage()


# --- drain -----------------------------------------------------------------------------------


def test_drain_answers_503_for_every_node_whatever_the_polls_say(clock: Clock) -> None:
    store = VerdictStore(["n1", "n2"], 5.0, clock=clock, wall_clock=lambda: WALL)
    n1 = NodePoller("n1", FakeProbe(Snapshot(SYNCED)), Policy(), store, clock=clock)  # type: ignore[arg-type]
    n1.run_once()
    assert store.draining is None
    changes = store.start_drain("agent stopping, exit in 11 s")
    assert [(t.node, t.from_state, t.to_state, t.at) for t in changes] == [
        ("n1", "synced", "draining", WALL),
        ("n2", "starting", "draining", WALL),
    ]
    assert all(not t.healthy for t in changes)
    assert store.draining == "agent stopping, exit in 11 s"
    n1.run_once()  # a healthy poll during the drain changes nothing
    for view in store.views():
        assert (view.healthy, view.state) == (False, "draining")
        assert view.reason == "draining (agent stopping, exit in 11 s)"
    assert store.view("n1").verdict is not None and store.view("n1").verdict.healthy  # type: ignore[union-attr]
    assert store.out_since("n1") == store.out_since("n2") == clock.now
    store.set_maintenance({"n2": maintenance.Maintenance("x", WALL, "ops", "/m")})
    assert store.view("n2").state == "draining"  # draining outranks maintenance


# --- reload ----------------------------------------------------------------------------------


def test_reload_keeps_verdicts_of_nodes_that_stay_and_applies_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="galera_health")
    probes = Probes()
    first = settings("n1=h1", "n2=h2", rise=1)
    wanted = [first]
    poller = Poller(
        first,
        VerdictStore(["n1", "n2"], first.max_age, healthy_max_age=first.healthy_max_age),
        probes,
        reload_settings=lambda: wanted[0],
    )
    poll_all(poller)
    store = poller.store
    kept = store.latest("n2")
    stats = poller.stats()
    runtime = poller.runtimes["n2"]

    wanted[0] = settings("n2=h2", "n3=h3", rise=2, max_age=9.0)
    assert poller.reload()
    assert store.nodes == ("n2", "n3")
    assert store.latest("n1") is None and "n1" not in poller.runtimes and "n1" not in stats
    assert probes.of("n1")[0].closed  # a removed node's connection is closed
    assert store.latest("n2") is kept and store.max_age == 9.0
    assert store.healthy_max_age == wanted[0].healthy_max_age
    assert store.view("n3").state == "starting"
    assert poller.policy.rise == 2 and poller.runtimes["n2"].poll.policy.rise == 2
    assert poller.runtimes["n2"] is runtime  # same address and connection settings: kept
    assert stats is poller.stats() and set(stats) == {"n2", "n3"}
    assert "config reloaded (nodes: n2=h2:3306, n3=h3:3306)" in caplog.text

    wanted[0] = settings("n2=h2:3307", "n3=h3", rise=2, max_age=9.0)  # n2 moved
    assert poller.reload()
    replacement = poller.runtimes["n2"]
    assert replacement is not runtime and runtime.poll.retired and probes.of("n2")[0].closed
    assert probes.addresses["n2"].port == 3307 and replacement.poll.probe is probes.of("n2")[1]
    assert replacement.built.address.port == 3307 and replacement.lease is None
    assert replacement.poll.stats is stats["n2"] and store.latest("n2") is kept  # history kept
    replacement.poll.run_once()
    assert probes.of("n2")[1].polls == 1


def test_a_bad_reload_keeps_the_running_configuration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from galera_health.config import ConfigError

    first = settings("n1=h1")

    def broken() -> Settings:
        raise ConfigError("interval (from config file 'x') must be at least 0.1, got 0")

    poller = Poller(first, VerdictStore(["n1"], first.max_age), Probes(), reload_settings=broken)
    assert not poller.reload()
    assert poller.settings is first and poller.store.nodes == ("n1",)
    rejected = [r for r in caplog.records if getattr(r, "event", None) == "reload_rejected"]
    assert len(rejected) == 1 and "must be at least 0.1" in rejected[0].getMessage()
    assert not Poller(first, VerdictStore(["n1"], 5.0), Probes()).reload()  # nothing to reload


def test_reload_cannot_move_the_listener(caplog: pytest.LogCaptureFixture) -> None:
    first = settings("n1=h1", listen="127.0.0.1:9200")
    moved = settings("n1=h1", listen="127.0.0.1:9300")
    poller = Poller(first, VerdictStore(["n1"], 5.0), Probes(), reload_settings=lambda: moved)
    assert poller.reload()
    assert poller.settings.listen == first.listen
    assert "listen 127.0.0.1:9200 -> 127.0.0.1:9300 needs a restart" in caplog.text


def test_retired_mid_poll_leaves_nothing_behind(clock: Clock) -> None:
    store = VerdictStore(["n1"], 5.0, clock=clock)
    probe = FakeProbe(Snapshot(SYNCED))
    node = NodePoller("n1", probe, Policy(), store, clock=clock)  # type: ignore[arg-type]

    def poll_then_retire() -> Snapshot:
        node.retired = True  # a reload removed the node while its poll ran
        return Snapshot(SYNCED)

    probe.poll = poll_then_retire  # type: ignore[method-assign]
    assert node.run_once() is None
    assert probe.closed and store.latest("n1") is None


def test_sighup_and_a_changed_config_file_reload_in_the_running_scheduler(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('user = "health"\ninterval = 60\n[nodes]\nn1 = "h1"\n')

    def load() -> Settings:
        return load_settings({}, {}, config_path=str(path))

    first = load()
    probes = Probes()
    poller = Poller(first, VerdictStore(["n1"], first.max_age), probes, reload_settings=load)
    poller.start()
    try:
        wait_until(lambda: poller.store.view("n1").state == "synced", "the first poll")
        path.write_text('user = "health"\ninterval = 30\n[nodes]\nn1 = "h1"\nn2 = "h2"\n')
        os.utime(path, (time.time() + 5, time.time() + 5))  # an mtime surely not the old one
        wait_until(lambda: poller.store.nodes == ("n1", "n2"), "a reload on the file change")
        wait_until(lambda: poller.store.view("n2").state == "synced", "the new node's poll")
        assert poller.settings.interval == 30.0
        # the interval changed: a new runtime
        assert poller.runtimes["n1"].poll.probe is probes.of("n1")[1]
        assert probes.of("n1")[0].closed

        # the same mtime as before, so only the request below reloads
        mtime = os.stat(path).st_mtime
        staged = tmp_path / "staged.toml"
        staged.write_text('user = "health"\ninterval = 30\n[nodes]\nn2 = "h2"\n')
        os.utime(staged, (mtime, mtime))
        os.replace(staged, path)
        poller.request_reload()  # SIGHUP
        wait_until(lambda: poller.store.nodes == ("n2",), "a reload on request")
        assert probes.of("n1")[0].closed
        alive, reason = poller.liveness()
        assert alive and reason == "ok"
    finally:
        poller.stop()
    assert not poller.liveness()[0]


def test_a_reload_replaces_a_nodes_lease_with_its_health_poll_and_the_store_follows(
    tmp_path: Path,
) -> None:
    """--writer: one runtime per node. A change of anything its connections are built from
    (address, writer account, interval) replaces the health probe and the lease client
    together; a policy change replaces neither; the store judges each renewal by its promise."""
    from galera_health.lease import WRITER, LeaseRow, LeaseState

    password = tmp_path / "pw"
    password.write_text("x")
    first = settings("n1=h1", "n2=h2", writer="true")
    wanted = [first]
    store = VerdictStore(["n1", "n2"], first.max_age, healthy_max_age=first.healthy_max_age)
    probes = Probes()
    poller = Poller(first, store, probes, reload_settings=lambda: wanted[0])
    runtime = poller.runtimes["n1"]
    lease, node = runtime.lease, runtime.poll
    assert lease is not None
    assert lease.client.address.host == "h1" and lease.client.credentials.user == "health"
    held = LeaseState("n1", WRITER, row=LeaseRow("n1", "u1", epoch=1), holding=1, renewed_at=0.0)
    store.publish_lease(held)

    wanted[0] = settings("n1=h1", "n2=h2", writer="true", rise="2")  # the policy only
    assert poller.reload()
    assert poller.runtimes["n1"] is runtime and runtime.lease is lease
    assert store.writer_view("n1").lease is held

    changes: list[dict[str, Any]] = [
        {"nodes": ["n1=h3", "n2=h2"]},  # the address: another node
        {"writer_user": "w", "writer_password_file": str(password)},  # the writer account
        {"interval": "2"},  # the interval: lease period and validity
    ]
    for change in changes:
        wanted[0] = load_settings(
            {"nodes": ["n1=h1", "n2=h2"], "user": "health", "writer": "true", **change}, {}
        )
        assert poller.reload()
        new = poller.runtimes["n1"]
        new_lease, new_node = new.lease, new.poll
        assert new is not runtime and new_lease is not None and new_lease is not lease, change
        assert new_node is not node and new.built == poller.settings.node(new.built.address)
        assert lease.retired and node.retired
        assert new_lease.client.address == probes.addresses["n1"]
        assert new_node.probe is probes.of("n1")[-1]
        assert store.writer_view("n1").lease == LeaseState("n1")  # proven again before a 200
        runtime, lease, node = new, new_lease, new_node
    assert lease.client.interval == 2.0 and lease.period == 2.0 and lease.tick == 2.0
    assert lease.client.credentials.user == "health"  # the last change dropped writer_user
    assert lease.client.validity == 3.5 and store.writer_enabled


def test_a_renewal_is_judged_by_its_own_promise_after_a_reload() -> None:
    """A renewal made under a 2.5 s promise is not stretched by a reload's 3.5 s validity."""
    from galera_health.lease import WRITER, LeaseRow, LeaseState, answer

    old = LeaseState("n1", WRITER, row=LeaseRow("n1", "u1", epoch=1), holding=1, renewed_at=0.0,
                     validity=2.5)  # fmt: skip
    assert answer(old, True, "", 2.4, 3.5)[0] is True
    assert answer(old, True, "", 2.6, 3.5) == (
        False,
        "writer lease not renewed for 2.6 s (valid 2.5 s)",
    )


def test_drain_and_maintenance_change_the_overlays_under_one_lock(clock: Clock) -> None:
    """SIGTERM's start_drain (main thread) while housekeeping's set_maintenance is half done
    (held inside it by its wall clock): the drain waits for it, so n1's transitions chain
    synced -> maintenance -> draining and both overlays hold. Without the lock the drain ran in
    the middle: synced -> draining, then synced -> maintenance, from a state no longer true."""
    inside, release = threading.Event(), threading.Event()
    housekeeping: list[threading.Thread] = []

    def wall_clock() -> float:
        if threading.current_thread() in housekeeping:
            inside.set()
            release.wait(10)
        return WALL

    store = VerdictStore(["n1", "n2"], 5.0, clock=clock, wall_clock=wall_clock)
    NodePoller("n1", FakeProbe(Snapshot(SYNCED)), Policy(), store, clock=clock).run_once()  # type: ignore[arg-type]
    marker = maintenance.Maintenance("x", WALL, "ops", "/m")
    housekeeping.append(threading.Thread(target=store.set_maintenance, args=({"n1": marker},)))
    drain = threading.Thread(target=store.start_drain, args=("agent stopping",))
    housekeeping[0].start()
    assert inside.wait(10)
    drain.start()
    drain.join(0.5)  # without the lock it finishes here, in the middle of set_maintenance
    release.set()
    housekeeping[0].join(10)
    drain.join(10)
    chain = [(t.from_state, t.to_state) for t in store.transitions("n1")]
    assert chain == [("starting", "synced"), ("synced", "maintenance"), ("maintenance", "draining")]
    assert store.view("n1").state == "draining" and store.draining == "agent stopping"
    assert store.out_since("n1") is not None and store.out_since("n2") is not None
    store.set_maintenance({})
    assert store.view("n1").state == "draining"  # the drain outlives the maintenance


def test_livez_reports_a_stuck_lease_poll() -> None:
    """A lease poll hung beyond every deadline (an agent bug: each statement has a 1 s one)
    makes /livez's liveness fail, like a stuck health poll; it recovers when the poll ends."""
    from galera_health.lease import Failure

    release = threading.Event()

    class HungClient:
        address = NodeAddress("n1", "h1", 3306)

        def connect(self) -> Any:
            release.wait(30)
            return Failure("unreachable", "released")

        def close(self) -> None:
            pass

    first = settings("n1=h1", writer="true", stuck_after="1")
    poller = Poller(first, VerdictStore(["n1"], first.max_age), Probes())
    lease = poller.runtimes["n1"].lease
    assert lease is not None
    lease.client = HungClient()  # type: ignore[assignment]
    poller.start()
    try:
        wait_until(lambda: not poller.liveness()[0], "the stuck lease poll reported", 15)
        reason = poller.liveness()[1]
        assert reason.startswith("poller stuck: n1 lease poll running for "), reason
        release.set()
        wait_until(lambda: poller.liveness()[0], "liveness back once the poll ended", 15)
    finally:
        release.set()
        poller.stop()
